"""Forward speed of medtransfer's Keras-layout backbones against Keras, and of its ResNet50 against a
plainly written torchvision-style one.

``--against keras`` (default): each backbone (resnet50, densenet121, inception_v3,
inception_resnet_v2) against ``keras.applications`` (Keras 3, torch backend, ``include_top=False``)
on the same input in the same process, with the same weights (Keras' random weights written to an
h5 file and loaded into ours; the outputs are checked to agree), medians of interleaved repeats.
Keras' input is channels-last ``(n, h, w, 3)``, ours ``(n, 3, h, w)``; the transposition is not timed.

    KERAS_BACKEND=torch python benchmarks/models.py --size 128 --batch 4 --repeats 5 --threads 1

``--against torchvision``: the reference is torchvision's ResNet50 code written out (Bottleneck with a ``downsample``
Sequential, convs without bias), with the stride on the first 1x1 conv ("v1", the same FLOPs as
ours) and, for information, on the 3x3 conv ("v1.5", torchvision's choice). Both run in eval mode
under ``torch.inference_mode`` on the CPU; timings are interleaved (ours, reference, ours, ...) so
that load from other processes hits both alike, and the median of the repeats is reported.

    python benchmarks/models.py --against torchvision --size 112 --batch 32 --repeats 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

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


def against_keras(args) -> None:
    """Each backbone against Keras on the same input and weights; prints a table of medians."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import numpy as np

    from medtransfer.models import load_keras_h5, registry

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    x_keras = pixels / 127.5 - 1.0
    x_ours = torch.from_numpy(np.ascontiguousarray(x_keras.transpose(0, 3, 1, 2)))
    print(f"forward, CPU, batch {args.batch}, {args.size}x{args.size}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved repeats (Keras {keras.__version__}, torch backend)")
    print(f"  {'backbone':22s} {'medtransfer':>12s} {'Keras':>12s} {'ratio':>7s} {'img/s ours':>11s} "
          f"{'img/s Keras':>11s}  max rel. diff")
    for name in args.backbones:
        spec = registry.get(name)
        keras.backend.clear_session()
        theirs = getattr(keras.applications, spec.keras_name)(weights=None, include_top=False,
                                                               input_shape=(args.size, args.size, 3))
        ours = spec.create().eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "weights.h5"
            theirs.save(path)
            load_keras_h5(path, ours)

        def run_keras():
            return theirs(x_keras, training=False)

        def run_ours():
            return ours.features(x_ours, [ours.layer_names[-1]] if hasattr(ours, "layer_names") else ["block4"])

        times = {"ours": [], "keras": []}
        with torch.inference_mode():
            ref = keras.ops.convert_to_numpy(run_keras()).transpose(0, 3, 1, 2)
            got = next(iter(run_ours().values())).numpy()
            diff = float(np.abs(got - ref).max() / np.abs(ref).max())
            for _ in range(args.repeats):
                for key, fn in (("ours", run_ours), ("keras", run_keras)):
                    start = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - start)
        a, b = statistics.median(times["ours"]), statistics.median(times["keras"])
        print(f"  {name:22s} {a * 1000:9.1f} ms {b * 1000:9.1f} ms {a / b:7.3f} {args.batch / a:11.1f} "
              f"{args.batch / b:11.1f}  {diff:.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", choices=("keras", "torchvision"), default="keras")
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "densenet121", "inception_v3", "inception_resnet_v2"])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.against == "keras":
        against_keras(args)
        return
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
