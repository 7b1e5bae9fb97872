"""Tiny runs on the synthetic dataset: 32 px, 32 images, one or two epochs, one thread."""

import pytest

from medtransfer.training.config import RunConfig


def tiny_config(tmp_path, **overrides) -> RunConfig:
    values = dict(target="synthetic", target_options={"n_patients": 16, "images_per_patient": 2, "size": 32},
                  source="random", strategy="no-freeze", size=32, batch_size=8, epochs=2, probe_epochs=1,
                  k_folds=4, split_fractions=(0.75, 0.1, 0.15), threads=1, checkpoint_every_s=0,
                  cache_dir=str(tmp_path / "cache"), lr=1e-4)
    values.update(overrides)
    return RunConfig(**values)


@pytest.fixture
def tiny(tmp_path):
    return lambda **overrides: tiny_config(tmp_path, **overrides)
