"""Forward speed of medtransfer's Keras-layout ResNet50 against a plainly written torchvision-style one.

The reference is torchvision's ResNet50 code written out (Bottleneck with a ``downsample``
Sequential, convs without bias), with the stride on the first 1x1 conv ("v1", the same FLOPs as
ours) and, for information, on the 3x3 conv ("v1.5", torchvision's choice). Both run in eval mode
under ``torch.inference_mode`` on the CPU; timings are interleaved (ours, reference, ours, ...) so
that load from other processes hits both alike, and the median of the repeats is reported.

    python benchmarks/models.py --size 112 --batch 32 --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from medtransfer.models import ResNet50


class RefBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, v15: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=1 if v15 else stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride if v15 else 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class RefResNet50(nn.Module):
    """torchvision's ResNet50 backbone as torchvision writes it (no fc)."""

    def __init__(self, v15: bool = False) -> None:
        super().__init__()
        self.inplanes = 64
        self.v15 = v15
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=2)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [RefBottleneck(self.inplanes, planes, stride, downsample, self.v15)]
        self.inplanes = planes * 4
        layers += [RefBottleneck(self.inplanes, planes, v15=self.v15) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(x.mean(dim=(2, 3)), 1)


def conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of all convs for input ``x``, counted with forward hooks."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * module.in_channels * kh * kw // module.groups

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model(x)
    for handle in handles:
        handle.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=fmt)
    models = {
        "medtransfer (Keras v1)": ResNet50().eval().to(memory_format=fmt).embed,
        "torchvision-style v1": RefResNet50().eval().to(memory_format=fmt),
        "torchvision-style v1.5": RefResNet50(v15=True).eval().to(memory_format=fmt),
    }
    macs = {
        "medtransfer (Keras v1)": conv_macs(ResNet50(num_classes=2).eval(), x[:1]),
        "torchvision-style v1": conv_macs(RefResNet50(), x[:1]),
        "torchvision-style v1.5": conv_macs(RefResNet50(v15=True), x[:1]),
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for fn in models.values():  # warm-up
            fn(x)
        for _ in range(args.repeats):
            for name, fn in models.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["torchvision-style v1"])
    print(f"ResNet50 forward, CPU, batch {args.batch}, {args.size}x{args.size}, threads {torch.get_num_threads()}, "
          f"{'channels_last' if args.channels_last else 'contiguous'}, median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:24s} {median * 1000:8.1f} ms  ({median / base:5.3f} x torchvision-style v1)  "
              f"conv GMACs/image {macs[name] / 1e9:.3f}")


if __name__ == "__main__":
    main()
