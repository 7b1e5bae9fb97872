"""A study with pieces missing still gets a report that says what is missing."""

import pandas as pd

from medtransfer.analysis.run import analyze
from tests.analysis.fake_study import make_study


def test_missing_sources_weights_and_images_are_reported_not_fatal(tmp_path):
    # the fake study records no grid (its study.yaml lists sources only): --partial analyses what is there
    root = make_study(
        tmp_path / "study", sources=("imagenet", "radimagenet"), folds=2,
        skip={("knee", "radimagenet", "freeze", 1)},
        source_paths={"imagenet": str(tmp_path / "gone" / "imagenet.h5"), "radimagenet": str(tmp_path / "gone" / "rad.h5")},
    )
    (root / "runs" / "knee" / "imagenet-freeze" / "fold1" / "DONE").unlink()
    report = analyze(root, rows=200, channels=8, repeats=1, threads=1, device="cpu", partial=True)
    text = report.read_text()
    missing = text[text.index("What was missing"):]
    assert "knee/imagenet-freeze/fold1" in missing  # unfinished run
    assert "no stimulus images" in missing  # the dataset 'knee' has no root here
    assert "conv1 filters of imagenet: could not load" in missing
    assert "no random-init runs" in missing
    assert "radimagenet-freeze" in missing  # the freeze comparison of fold 1 lacks both runs
    table = pd.read_csv(root / "analysis" / "table2.csv")
    assert len(table) == 4 and table.loc[(table["source"] == "imagenet") & (table["strategy"] == "freeze"), "n"].item() == 1
    pred = pd.read_csv(root / "analysis" / "prediction_similarity.csv")
    assert len(pred) == 3 + 1  # fold 0: fine-tuned x 2 strategies + probes; fold 1: no-freeze only
    assert text.count("data:image/png;base64,") == 1  # Figure 5 only
    assert pd.read_csv(root / "analysis" / "similarity.csv").empty
