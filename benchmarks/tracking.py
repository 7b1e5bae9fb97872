"""Cost of tracking on a tiny study: untracked, an unreachable MLflow server, and the local store.

    python benchmarks/tracking.py                 # 3 repeats of untracked vs unreachable
    python benchmarks/tracking.py --local         # also the embedded SQLite store

Each repeat runs the same study (synthetic, 32 px, 2 runs of 3 epochs, one thread) into a fresh
directory, the settings alternating in one process; medians and their ratio are reported, and
the results of every tracked study are compared byte for byte with the untracked one
(``results/auc.csv`` and every ``predictions.csv``). On a shared machine the times are noisy:
compare ratios.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
from tests.study.conftest import tiny_study  # noqa: E402

from medtransfer.study.runner import run_study  # noqa: E402


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outputs(out: Path) -> dict[str, bytes]:
    paths = [out / "results" / "auc.csv", *sorted(out.glob("runs/**/predictions.csv"))]
    return {str(p.relative_to(out)): p.read_bytes() for p in paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--local", action="store_true", help="also time the embedded SQLite store")
    args = parser.parse_args()
    settings = {"untracked": None, "unreachable": {"kind": "mlflow", "uri": f"http://127.0.0.1:{closed_port()}"}}
    if args.local:
        settings["local store"] = {"kind": "mlflow"}
    times: dict[str, list[float]] = {name: [] for name in settings}
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            reference = None
            for name, tracking in settings.items():
                base = Path(tmp) / f"{repeat}-{name.replace(' ', '_')}"
                study = tiny_study(base, tracking=tracking, training={"epochs": 3})
                began = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run_study(study, base / "study")
                times[name].append(time.perf_counter() - began)
                got = outputs(base / "study")
                reference = reference or got
                identical &= got == reference
    base_time = statistics.median(times["untracked"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:12s} median {median:6.2f} s  ratio {median / base_time:.3f}  "
              f"({', '.join(f'{v:.2f}' for v in values)})")
    print(f"results byte-identical to untracked: {identical}")


if __name__ == "__main__":
    main()
