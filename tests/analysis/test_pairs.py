from collections import Counter

from medtransfer.analysis.inventory import read_study
from medtransfer.analysis.pairs import distinct_models, fold_pairs, roles
from tests.analysis.fake_study import make_study


def test_full_grid_gives_every_pair_kind_and_nine_distinct_networks(tmp_path):
    study = read_study(make_study(tmp_path, folds=1))
    role_map = roles(study)
    assert role_map.pretrained == ("imagenet", "radimagenet") and role_map.random == "random"
    pairs, missing = fold_pairs(study, "knee", 0, role_map)
    kinds = Counter(p.kind for p in pairs)
    assert kinds == {"ft_vs_init": 5, "ft_vs_random": 2, "init_vs_random": 2, "ft_vs_ft": 2,
                     "init_vs_init": 1, "freeze_vs_no_freeze": 2, "random_vs_random": 1}
    assert missing == []
    models = distinct_models(pairs)
    # 2 pretrained inits + 2 random inits + 5 fine-tuned checkpoints
    assert len(models) == 9
    assert sum(m.kind == "finetuned" for m in models.values()) == 5
    # the random-FT run's init is the same network as the random baseline
    rand_ft = next(p for p in pairs if p.kind == "ft_vs_init" and p.source == "random")
    rand_base = next(p for p in pairs if p.kind == "random_vs_random")
    assert rand_ft.b.key == rand_base.a.key and rand_base.a.key != rand_base.b.key
    # each fine-tuned model is compared with its own init
    for p in pairs:
        if p.kind == "ft_vs_init":
            assert p.a.kind == "finetuned" and p.b.kind == "init" and p.a.load == p.b.load


def test_roles_follow_the_study_names_not_the_paper_names(tmp_path):
    study = read_study(make_study(tmp_path, sources=("synth-b", "synth-a", "random"), folds=1))
    role_map = roles(study)
    assert role_map.pretrained == ("synth-b", "synth-a")  # study.yaml order
    assert roles(study, ("synth-a",)).pretrained == ("synth-a", "synth-b")
    pairs, _ = fold_pairs(study, "knee", 0, role_map)
    assert {p.name for p in pairs if p.kind == "ft_vs_ft"} == {"synth-b-FT vs synth-a-FT"}


def test_missing_source_and_runs_are_reported_not_fatal(tmp_path):
    root = make_study(tmp_path, sources=("imagenet", "random"), folds=1, skip={("knee", "imagenet", "freeze", 0)})
    (root / "runs" / "knee" / "random-no-freeze" / "fold0" / "DONE").unlink()
    study = read_study(root)
    assert study.incomplete == ["knee/random-no-freeze/fold0"]
    role_map = roles(study)
    assert role_map.random is None and role_map.pretrained == ("imagenet",)
    pairs, missing = fold_pairs(study, "knee", 0, role_map)
    kinds = Counter(p.kind for p in pairs)
    assert kinds["ft_vs_ft"] == 0 and kinds["init_vs_init"] == 0 and kinds["ft_vs_init"] == 1
    assert kinds["random_vs_random"] == 1 and kinds["init_vs_random"] == 1
    text = "\n".join(missing)
    assert "imagenet-freeze" in text and "fewer than two pretrained sources" in text and "no random-init run" in text
