"""Nothing under a study directory or the weights cache is unpickled.

Each reader of a ``.pt``/``.pth`` file (resume, the best-weights snapshot, best.pt, a probe's
head.pt, sources, ports, the weights cache, the similarity command's files) and the SLURM
collector get a crafted pickle whose ``__reduce__`` would create a marker directory: nothing may
run, and the error must name the file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from medtransfer.errors import MedtransferError, WeightsError


class Payload:
    """Unpickling this creates ``marker`` (a directory): proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def craft(path: Path, marker: Path, form: str, wrap=None) -> Path:  # noqa: ANN001
    """Write a malicious file at ``path``: torch's zip format, its legacy format, or a bare pickle;
    ``wrap`` puts the payload inside an otherwise well-formed structure."""
    obj = wrap(Payload(marker)) if wrap else {"state_dict": Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "zip":
        torch.save(obj, path)
    elif form == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as handle:
            pickle.dump(obj, handle)
    return path


FORMS = ["zip", "legacy", "pickle"]


def _refused(call, path: Path, marker: Path, error=MedtransferError) -> str:  # noqa: ANN001
    with pytest.raises(error) as caught:
        call()
    assert not marker.exists(), "code from the crafted file ran"
    message = str(caught.value)
    assert str(path) in message, message
    return message


def _checkpoint_layout(payload) -> dict:  # noqa: ANN001 - the layout write_checkpoint gives last.pt
    return {"phase": "finetune", "epoch": 1, "model": {"w": torch.zeros(1)}, "optimizer": None, "stopper": None,
            "history": [], "rng": {"torch": payload}, "best_file": None}


@pytest.mark.parametrize("form", FORMS)
def test_resume_refuses_a_crafted_last_pt(tmp_path, form):
    from medtransfer.training.run import train_run

    from ..training.conftest import tiny_config

    marker = tmp_path / "ran"
    out = tmp_path / "run"
    last = craft(out / "checkpoints" / "last.pt", marker, form, _checkpoint_layout)
    message = _refused(lambda: train_run(tiny_config(tmp_path, epochs=1), out), last, marker)
    assert "cannot resume" in message and "delete" in message
    if form == "zip":
        assert "pickled Python objects" in message


def test_resume_refuses_a_crafted_best_snapshot(tmp_path):
    from medtransfer.training.checkpoints import read_checkpoint, save_atomic
    from medtransfer.training.record import RunDir

    marker = tmp_path / "ran"
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    state = {**_checkpoint_layout(torch.zeros(3)), "best_file": "best.finetune.0001.pt"}
    save_atomic(state, run.last)
    snapshot = craft(run.snapshot("best.finetune.0001.pt"), marker, "zip")
    message = _refused(lambda: read_checkpoint(run), snapshot, marker)
    assert str(run.last) in message


def test_a_well_formed_last_pt_naming_a_file_outside_checkpoints_is_refused(tmp_path):
    from medtransfer.training.checkpoints import read_checkpoint, save_atomic
    from medtransfer.training.record import RunDir

    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    save_atomic({**_checkpoint_layout(torch.zeros(3)), "best_file": "../../elsewhere.pt"}, run.last)
    with pytest.raises(MedtransferError, match="best_file"):
        read_checkpoint(run)


@pytest.mark.parametrize("form", FORMS)
def test_best_pt_and_head_pt_are_refused(tmp_path, form):
    from medtransfer.models import load_checkpoint
    from medtransfer.training.probe import load_probe

    marker = tmp_path / "ran"
    best = craft(tmp_path / "run" / "checkpoints" / "best.pt", marker, form)
    _refused(lambda: load_checkpoint(best), best, marker, WeightsError)
    head = craft(tmp_path / "run" / "probe" / "head.pt", marker, form)
    _refused(lambda: load_probe(head), head, marker, WeightsError)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
@pytest.mark.parametrize("form", FORMS)
def test_source_files_are_refused(tmp_path, form, suffix):
    from medtransfer.models import load_source
    from medtransfer.models.sources import identify_backbone

    marker = tmp_path / "ran"
    source = craft(tmp_path / "study" / "sources" / f"mine{suffix}", marker, form)
    _refused(lambda: load_source(str(source)), source, marker, WeightsError)
    _refused(lambda: identify_backbone(source), source, marker, WeightsError)
    # with the backbone given, the port reader is the only one asked
    _refused(lambda: load_source(str(source), backbone="resnet50"), source, marker, WeightsError)


def test_a_crafted_port_in_the_weights_cache_is_refused(tmp_path):
    from medtransfer.models import load_source

    marker = tmp_path / "ran"
    cached = craft(tmp_path / "cache" / "RadImageNet-ResNet50_notop.pth", marker, "zip")
    message = _refused(lambda: load_source("radimagenet", cache_dir=tmp_path / "cache"), cached, marker, WeightsError)
    assert "weights_only=True" in message


def test_similarity_readers_refuse_crafted_files(tmp_path):
    from medtransfer.models.checkpoint import checkpoint_meta, is_checkpoint
    from medtransfer.models.torch_port import read_port, read_state_dict

    marker = tmp_path / "ran"
    path = craft(tmp_path / "model.pt", marker, "zip")
    for reader in (checkpoint_meta, is_checkpoint, read_port, read_state_dict):
        _refused(lambda: reader(path), path, marker, WeightsError)


def test_a_damaged_file_is_named_but_not_called_unsafe(tmp_path):
    from medtransfer.models import load_checkpoint
    from medtransfer.models.safe_load import UnsafeFileError

    path = tmp_path / "best.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="not a readable PyTorch file") as caught:
        load_checkpoint(path)
    assert not isinstance(caught.value, UnsafeFileError) and str(path) in str(caught.value)


def test_the_slurm_collector_reads_json_never_the_result_pickle(tmp_path):
    from types import SimpleNamespace

    from medtransfer.study.executors import Outcome, SlurmExecutor, Task, write_outcome

    marker = tmp_path / "ran"
    tasks, jobs = [], []
    for i in range(2):
        directory = tmp_path / "study" / "runs" / f"run{i}"
        directory.mkdir(parents=True)
        tasks.append(Task(f"run{i}", "{}", str(directory)))
        folder = tmp_path / "study" / "slurm" / f"10{i}"
        result = craft(folder / f"10{i}_0_result.pkl", marker, "pickle", lambda p: ("success", p))
        jobs.append(SimpleNamespace(job_id=f"10{i}", paths=SimpleNamespace(result_pickle=result,
                                                                          stderr=folder / "log.err")))
    write_outcome(tasks[0], Outcome("run0", "done", auc=0.75))  # what the job body writes
    executor = SlurmExecutor(tmp_path / "study" / "slurm", cluster="slurm", poll_s=0.01)
    done, died = executor.wait(tasks, jobs)
    assert not marker.exists()
    assert (done.state, done.auc) == ("done", 0.75)
    assert died.state == "failed" and "101" in died.error and "log.err" in died.error
