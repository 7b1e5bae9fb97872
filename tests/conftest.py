"""Test-wide settings: Keras (a test-only reference) runs on the torch backend; no progress bars."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("MEDTRANSFER_QUIET", "1")
