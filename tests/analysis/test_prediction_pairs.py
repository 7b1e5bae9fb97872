"""prediction_pairs.csv: every pair of fine-tuned networks of a target, random init included, with
the pooled agreement excess, its interval and its test (one pretrained source suffices)."""

import shutil
from itertools import combinations

import numpy as np
import pandas as pd

from medtransfer.analysis.inventory import read_study
from medtransfer.analysis.predictions import fine_tuned_pairs
from tests.analysis.fake_study import make_study


def _study(tmp_path, copy=False):
    def checkpoint(run_dir, config):
        if copy and config["source_name"] == "random":  # random init errs exactly where alpha no-freeze does
            twin = run_dir.parents[1] / "alpha-no-freeze" / run_dir.name / "predictions.csv"
            shutil.copyfile(twin, run_dir / "predictions.csv")

    make_study(tmp_path, sources=("alpha", "random"), folds=3, n_test=40, checkpoint=checkpoint)
    return read_study(tmp_path)


def _correct(path):
    frame = pd.read_csv(path).sort_values("image_id")
    probs = frame[[c for c in frame.columns if c.startswith("p_")]].to_numpy()
    return frame["label"].to_numpy(), probs.argmax(axis=1) == frame["label"].to_numpy()


def test_every_pair_with_random_init_and_the_pooled_excess_computed_independently(tmp_path):
    study = _study(tmp_path)
    pairs, missing = fine_tuned_pairs(study, resamples=300, permutations=300, seed=1)
    assert not missing
    models = ["alpha-no-freeze", "alpha-freeze", "random-no-freeze"]
    assert sorted(zip(pairs.model_a, pairs.model_b)) == sorted(combinations(models, 2))
    assert (pairs.folds == 3).all() and (pairs.n == 120).all()
    for row in pairs.itertuples():
        excess, agree, acc_a, acc_b = 0.0, [], [], []
        for fold in range(3):
            _, a = _correct(tmp_path / "runs" / "knee" / row.model_a / f"fold{fold}" / "predictions.csv")
            _, b = _correct(tmp_path / "runs" / "knee" / row.model_b / f"fold{fold}" / "predictions.csv")
            o, a1, a2 = (a == b).mean(), a.mean(), b.mean()
            excess += (o - (a1 * a2 + (1 - a1) * (1 - a2))) / 3  # equal fold sizes
            agree += list(a == b)
            acc_a += list(a)
            acc_b += list(b)
        assert np.isclose(row.excess, excess) and np.isclose(row.observed, np.mean(agree))
        assert np.isclose(row.accuracy_a, np.mean(acc_a)) and np.isclose(row.accuracy_b, np.mean(acc_b))
        assert -1 <= row.excess_low <= row.excess <= row.excess_high <= 1
        assert 0 < row.p_value <= row.p_holm <= 1


def test_a_network_that_errs_where_another_does_shows_excess_and_a_small_p(tmp_path):
    pairs, _ = fine_tuned_pairs(_study(tmp_path, copy=True), resamples=300, permutations=300, seed=2)
    twin = pairs[(pairs.model_a == "alpha-no-freeze") & (pairs.model_b == "random-no-freeze")].iloc[0]
    assert twin.observed == 1.0 and twin.excess_low > 0
    assert twin.p_value == 1 / 301  # no permutation reaches full agreement
