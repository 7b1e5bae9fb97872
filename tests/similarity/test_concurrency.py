"""Problems scored side by side: order, errors, thread settings (similarity.concurrency)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from medtransfer.similarity.concurrency import map_in_order


def test_results_come_in_the_items_order_whatever_order_they_finish_in():
    finished = [threading.Event() for _ in range(6)]

    def work(i: int) -> int:  # item i finishes only after item i + 1: in reverse order
        if i < 5:
            assert finished[i + 1].wait(timeout=60), "the items did not run side by side"
        finished[i].set()
        return i * i

    assert list(map_in_order(work, range(6), workers=6)) == [i * i for i in range(6)]


def test_each_worker_runs_torch_and_the_blas_on_one_thread_and_the_caller_keeps_its_setting():
    torch.set_num_threads(2)
    try:
        def settings(_: int) -> tuple[int, set[int]]:
            return torch.get_num_threads(), {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

        seen = list(map_in_order(settings, range(8), workers=2))
        assert {threads for threads, _ in seen} == {1}
        assert set().union(*(blas for _, blas in seen)) <= {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_one_worker_computes_in_the_calling_thread():
    caller = threading.get_ident()
    assert set(map_in_order(lambda _: threading.get_ident(), range(4), workers=1)) == {caller}


def test_an_items_error_is_raised_at_its_turn_and_the_items_not_started_are_dropped():
    started: list[int] = []
    release = threading.Event()

    def work(i: int) -> int:
        started.append(i)
        if i == 1:
            raise ValueError("item 1 is bad")
        if i == 0:
            release.wait(timeout=30)
        return i

    results = map_in_order(work, range(100), workers=2)
    release.set()
    assert next(results) == 0
    with pytest.raises(ValueError, match="item 1 is bad"):
        next(results)
    assert len(started) <= 1 + 2 * 2 + 1  # the items submitted ahead, never the whole list


def test_threads_give_the_numbers_of_one_thread():
    rng = np.random.default_rng(0)
    mats = [torch.from_numpy(rng.standard_normal((300, 40))) for _ in range(6)]

    def score(i: int) -> float:
        x = mats[i] - mats[i].mean(0)
        return float(torch.linalg.eigvalsh(x.T @ x).sum())

    alone = list(map_in_order(score, range(6), workers=1))
    together = list(map_in_order(score, range(6), workers=2))
    np.testing.assert_allclose(together, alone, rtol=1e-12)


def test_workers_are_capped_by_the_memory_available(monkeypatch):
    from medtransfer.similarity import concurrency

    monkeypatch.setattr(concurrency, "available_bytes", lambda: 3 * concurrency.WORKER_BYTES + 5)
    assert concurrency.scoring_workers(16) == 3
    assert concurrency.scoring_workers(2) == 2
    monkeypatch.setattr(concurrency, "available_bytes", lambda: 10)
    assert concurrency.scoring_workers(8) == 1
    monkeypatch.setattr(concurrency, "available_bytes", lambda: None)
    assert concurrency.scoring_workers(8) == 8
