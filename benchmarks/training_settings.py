"""The effect of one training setting on the demo's target (docs/training-settings.md).

Fine-tunes the demo study's target from its pretrained source synth_a (and from random init)
over its 3 folds with the demo's constants, except the settings given, and prints test AUC
mean +- std over the folds. Needs a finished demo directory (``medtransfer demo --out DIR``) for
the source checkpoint::

    python benchmarks/training_settings.py demo-study                       # the demo's own settings
    python benchmarks/training_settings.py demo-study bn_momentum=null      # Keras' 0.99 (torch 0.01)
    python benchmarks/training_settings.py demo-study lr=1e-4 augment=false size=48
    python benchmarks/training_settings.py demo-study lr=1e-3 cells=synth_a   # only that source
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def main(argv: list[str]) -> None:
    from medtransfer.demo import demo_study
    from medtransfer.study.expand import run_config
    from medtransfer.training.record import RUNS, RunDir
    from medtransfer.training.run import train_run

    demo = Path(argv[0])
    changes = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in argv[1:])}
    cells = str(changes.pop("cells", "synth_a,random")).split(",")
    study = demo_study(demo)
    study = study.model_copy(update={"training": {**study.training, "threads": 1, **changes}})
    target = study.targets[0]
    if "size" in changes:
        # render the images at that size too (same patients and ids, so the same folds)
        target = target.model_copy(update={"size": changes["size"],
                                           "options": {**target.options, "size": changes["size"]}})
    sources = {s.name: s for s in study.sources}
    work = Path(tempfile.mkdtemp(prefix="settings-"))
    try:
        for name in cells:
            strategy = "no-freeze"
            aucs, began = [], time.process_time()
            for fold in study.fold_list:
                config = run_config(study, target, sources[name], strategy, fold, 0, demo.resolve())
                # its folds and source files are relative to the demo directory, the runs lie outside it
                config = RunDir(demo.resolve() / RUNS / "settings").resolve(config)
                aucs.append(train_run(config, work / f"{name}-{strategy}-{fold}").metrics["auc"])
            print(f"{' '.join(a for a in argv[1:] if not a.startswith('cells=')) or 'demo settings'}: {name} {strategy}: AUC x 100 "
                  f"{100 * np.mean(aucs):.1f} +- {100 * np.std(aucs, ddof=1):.1f} "
                  f"(folds {', '.join(f'{100 * a:.1f}' for a in aucs)}; {time.process_time() - began:.0f} s CPU)",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
