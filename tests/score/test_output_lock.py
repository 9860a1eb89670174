"""The scoring lock: held by the scoring process alone, never by the loader workers it forks."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from medrec.errors import OutputError
from medrec.score.lock import output_lock


def test_a_forked_worker_does_not_keep_the_lock(tmp_path):
    out = tmp_path / "p.csv"
    context = multiprocessing.get_context("fork")
    with output_lock(out):
        # a stand-in for a DataLoader worker: forked while the lock is held, still running after
        worker = context.Process(target=time.sleep, args=(60,), daemon=True)
        worker.start()
    try:
        with output_lock(out):  # the parent let go: nobody holds the lock any more
            pass
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(timeout=10)


def test_a_second_scorer_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "p.csv"
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()

    def hold() -> None:
        with output_lock(out):
            ready.set()
            release.wait(60)

    holder = context.Process(target=hold, daemon=True)
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(OutputError, match="another 'medrec score' is writing this file"), output_lock(out):
            pass
    finally:
        release.set()
        holder.join(timeout=30)
    with output_lock(out):  # released when the holder ended
        pass
