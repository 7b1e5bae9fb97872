"""Small study directories written the way the contract (docs/interfaces.md) describes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.training.record import RunDir

STRATEGIES = ("no-freeze", "freeze")


def write_predictions(path: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"image_id": ids, "label": labels})
    for j in range(probs.shape[1]):
        frame[f"p_{j}"] = probs[:, j]
    frame.to_csv(path, index=False)


def noisy_probs(rng: np.random.Generator, labels: np.ndarray, k: int, signal: float) -> np.ndarray:
    logits = rng.standard_normal((len(labels), k)) + signal * np.eye(k)[labels]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_study(
    root: Path,
    targets: dict[str, int] | None = None,
    sources: tuple[str, ...] = ("imagenet", "radimagenet", "random"),
    folds: int = 3,
    n_test: int = 40,
    seed: int = 0,
    skip: set[tuple[str, str, str, int]] = frozenset(),
    config_extra: dict | None = None,
    checkpoint=None,
    write_auc_csv: bool = True,
    source_paths: dict[str, str] | None = None,
) -> Path:
    """Write runs for every target (name -> number of classes), source, strategy and fold.

    Random sources run no-freeze only. ``checkpoint(run_dir, config)`` may write the model files.
    ``results/auc.csv`` holds the true AUCs computed with sklearn (the study's job).
    """
    from sklearn.metrics import roc_auc_score

    targets = targets or {"knee": 2}
    rng = np.random.default_rng(seed)
    auc_rows = []
    for target, k in targets.items():
        for fold in range(folds):
            ids = [f"{target}-img{fold}-{i}" for i in range(n_test)]
            labels = np.arange(n_test) % k
            rng.shuffle(labels)
            for source in sources:
                strategies = ("no-freeze",) if source == "random" else STRATEGIES
                for strategy in strategies:
                    if (target, source, strategy, fold) in skip:
                        continue
                    run_dir = root / "runs" / target / f"{source}-{strategy}" / f"fold{fold}"
                    run_dir.mkdir(parents=True)
                    load = (source_paths or {}).get(source, source)
                    config = {"target": target, "root": None, "source": load, "source_name": source, "normalization": "caffe",
                              "strategy": strategy, "fold": fold, "seed": 0, "size": 32, "classes": [f"c{j}" for j in range(k)],
                              **(config_extra or {})}
                    (run_dir / "config.json").write_text(json.dumps(config))
                    probs = noisy_probs(rng, labels, k, signal=1.0 + rng.uniform(0, 2))
                    write_predictions(run_dir / "predictions.csv", ids, labels, probs)
                    if strategy == "freeze":
                        write_predictions(run_dir / "probe" / "predictions.csv", ids, labels, noisy_probs(rng, labels, k, 0.5))
                    if checkpoint is not None:
                        checkpoint(run_dir, config)
                    RunDir(run_dir).write_done()  # with the digests of the files written above
                    auc = roc_auc_score(labels, probs[:, 1]) if k == 2 else roc_auc_score(labels, probs, multi_class="ovr")
                    auc_rows.append({"target": target, "source": source, "strategy": strategy, "fold": fold,
                                     "seed": 0, "auc": auc})
    if write_auc_csv:
        (root / "results").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(auc_rows).to_csv(root / "results" / "auc.csv", index=False)
    (root / "study.yaml").write_text("name: fake\nsources:\n" + "".join(f"  - name: {s}\n" for s in sources))
    return root
