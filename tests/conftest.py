"""Test-wide settings: Keras (a test-only reference) runs on the torch backend; no progress bars;
property tests draw the same examples on every run (a test that fails must fail every time, so
that a failure is a defect found, not a flaky landing)."""

import os

from hypothesis import settings

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("MEDTRANSFER_QUIET", "1")

settings.register_profile("medtransfer", derandomize=True, print_blob=True)
settings.load_profile("medtransfer")
