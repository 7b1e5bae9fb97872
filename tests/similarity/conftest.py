"""Similarity tests work on small matrices: one BLAS thread avoids thread start-up and spinning on a busy machine."""

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield
