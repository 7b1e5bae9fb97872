"""The plain training loop with a compiled forward (torch.compile), as ``RunConfig(compile=True)`` uses it."""

import pytest
import torch

from medtransfer.models import Normalization
from medtransfer.training.loop import StepSetup, train_epoch
from medtransfer.training.optim import KerasAdam


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _epochs(compiled: bool) -> list[float]:
    torch.manual_seed(0)
    model = TinyNet()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (12, 3, 8, 8), generator=generator, dtype=torch.uint8)
    labels = torch.arange(12) % 2
    # backend="eager": dynamo's real wrapper without generating code, so the test needs no compiler
    forward = torch.compile(model, backend="eager") if compiled else None
    setup = StepSetup(Normalization("caffe"), None, None, False, forward)
    optimizer = KerasAdam(model.parameters(), lr=1e-2)
    shuffle = torch.Generator().manual_seed(1)
    rows = torch.arange(12)
    return [train_epoch(model, optimizer, pixels, labels, rows, 4, setup, shuffle, None)[0] for _ in range(3)]


def test_compiled_forward_trains_like_the_plain_model():
    with pytest.raises(TypeError):  # why the loop must not test a compiled module for truth
        bool(torch.compile(TinyNet(), backend="eager"))
    assert _epochs(compiled=True) == pytest.approx(_epochs(compiled=False), rel=1e-5)
