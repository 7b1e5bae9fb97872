"""Signals that stop a run (preemption, Ctrl-C) never land inside a checkpoint write.

A scheduler's preemption signal runs its Python handler between two bytecodes, which may be
inside ``torch.save``'s write callback; the ``SystemExit`` the handler raises then surfaces as a
``RuntimeError`` from torch's zip writer, and the run would look failed. Inside
:func:`deferred_signals` such signals are only recorded; they are delivered, to the handler
that was installed, as soon as the block ends. :func:`mark_preempting` wraps a preemption
handler so that code can ask :func:`preempting` whether the process is being stopped on purpose;
:func:`stop_on_preemption` installs one for a process that runs a single run (a Ray worker).

A handler's exit can also be lost: CPython runs a handler wherever the main thread is, and inside
a finalizer (a ``__del__``, a weakref callback, a generator the garbage collector closes) the
``SystemExit`` it raises is reported as unraisable and dropped. The run would then train on while
its scheduler requeues it. Both handlers remember the exit they raised, and the training loop
calls :func:`exit_if_preempted` at every step, which raises it again.

:func:`stop_with_parent` has a worker process signalled when the process that started it dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DEFERRED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))
# what schedulers send to stop a process: SIGTERM (Ray, Kubernetes, a node drain), USR2 (SLURM, submitit)
PREEMPTION = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR2") if hasattr(signal, name))
_state = threading.local()
_preempting = threading.Event()
_exit: list[SystemExit] = []  # the exit a preemption handler raised, once it has (see exit_if_preempted)


@contextmanager
def deferred_signals(signals: tuple[int, ...] = DEFERRED) -> Iterator[None]:
    """Hold back ``signals`` during the block, then deliver each one received (once, in order).

    Only the main thread can install handlers; elsewhere (and when nested) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or getattr(_state, "active", False):
        yield
        return
    received: list[int] = []
    previous: dict[int, Any] = {}
    for sig in signals:
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        except (OSError, ValueError):
            continue
    _state.active = True
    try:
        yield
    finally:
        _state.active = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(received):
            handler = previous.get(sig)
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), sig)


def mark_preempting(handler: Callable[[int, Any], Any]) -> Callable[[int, Any], Any]:
    """``handler`` that first records that this process is being preempted."""
    def preempt(signum: int, frame: Any) -> Any:
        _preempting.set()
        try:
            return handler(signum, frame)
        except SystemExit as error:
            _exit[:] = [error]
            raise

    return preempt


def preempting() -> bool:
    """Whether a preemption handler (:func:`mark_preempting`'s, :func:`stop_on_preemption`'s) has run
    in this process."""
    return _preempting.is_set()


def exit_if_preempted() -> None:
    """Raise again (a new instance of the same type and code) the ``SystemExit`` that a preemption
    handler raised in this process, in case it was dropped on its way (see the module's doc);
    nothing when no handler has exited. Cheap enough to call at every training step."""
    if _exit:
        raise type(_exit[0])(*_exit[0].args)


class Preempted(SystemExit):
    """Raised in the main thread by the handler of :func:`stop_on_preemption`."""


def stop_on_preemption(signals: tuple[int, ...] = PREEMPTION) -> bool:
    """From now on the first of ``signals`` marks this process as preempting and raises
    :class:`Preempted` (exit code 128 + the signal) where the main thread is; later ones are
    ignored, since the process is already stopping (a SIGTERM and then a USR2 are one
    preemption; a second raise could cut short the cleanup of the first).

    Meant for a process that runs one run and then exits: the handlers stay. Resets
    :func:`preempting`. Returns False (and does nothing) outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    _preempting.clear()
    _exit.clear()

    def preempt(signum: int, frame: Any) -> None:
        if _preempting.is_set():
            return
        _preempting.set()
        _exit[:] = [Preempted(128 + signum)]
        raise _exit[0]

    for sig in signals:
        signal.signal(sig, preempt)
    return True


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 1.0  # how often the fallback of stop_with_parent looks at the parent


def stop_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Have ``signum`` sent to this process as soon as its parent, pid ``parent``, dies (even of
    a SIGKILL), so that a worker never outlives the driver that hands it work. A parent that is
    already gone counts: the signal is sent now. What the signal does is the handler's business
    (none installed: SIGTERM ends the process); a signal this process ignores (inherited from a
    parent started that way) gets its default action back, in the main thread.

    On Linux the kernel sends it (``prctl(PR_SET_PDEATHSIG)``); it does so when the *thread* that
    started this process ends, so start it from a thread that outlives it (the main thread, or
    one that waits for it). Elsewhere a daemon thread compares ``os.getppid()`` with ``parent``
    every :data:`PARENT_POLL_S` seconds.
    """
    if signal.getsignal(signum) == signal.SIG_IGN and threading.current_thread() is threading.main_thread():
        signal.signal(signum, signal.SIG_DFL)
    if _kernel_signals_parent_death(signum):
        # the parent may have died before the prctl: then this process is already someone else's
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def _kernel_signals_parent_death(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent thread ends; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), ctypes.c_ulong(0), ctypes.c_ulong(0),
                 ctypes.c_ulong(0)) == 0
