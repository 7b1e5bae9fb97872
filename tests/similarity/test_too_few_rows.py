"""Too few rows for a measure is a typed error, which the layer-wise analysis catches by type."""

import numpy as np
import pytest

from medtransfer.errors import MedtransferError, TooFewRowsError
from medtransfer.similarity import cca, linear_cka


def test_too_few_rows_is_typed():
    rng = np.random.default_rng(0)
    with pytest.raises(TooFewRowsError):
        linear_cka(rng.normal(size=(1, 3)), rng.normal(size=(1, 3)))
    with pytest.raises(TooFewRowsError, match="p \\+ q"):
        cca(rng.normal(size=(10, 6)), rng.normal(size=(10, 6)))


def test_other_bad_input_is_not_too_few_rows():
    rng = np.random.default_rng(0)
    with pytest.raises(MedtransferError) as info:
        cca(rng.normal(size=(50, 3)), rng.normal(size=(40, 3)))
    assert not isinstance(info.value, TooFewRowsError)
