"""``<output>.lock`` of ``medrec score``: gone after success and after an error, a stale one taken over."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from medrec.errors import OutputError
from medrec.score.lock import output_lock


def test_the_lock_file_is_removed_on_success(tmp_path):
    out = tmp_path / "p.csv"
    with output_lock(out):
        assert (tmp_path / "p.csv.lock").is_file()
    assert not (tmp_path / "p.csv.lock").exists()


def test_the_lock_file_is_removed_on_error(tmp_path):
    out = tmp_path / "p.csv"
    with pytest.raises(ZeroDivisionError), output_lock(out):
        1 / 0  # noqa: B018 - any error inside the scoring
    assert not (tmp_path / "p.csv.lock").exists()


def test_a_stale_lock_file_left_by_a_killed_scorer_is_taken_over(tmp_path):
    out = tmp_path / "p.csv"
    (tmp_path / "p.csv.lock").write_text("")  # what SIGKILL leaves: the file, without a lock on it
    with output_lock(out):
        pass
    assert not (tmp_path / "p.csv.lock").exists()


def test_a_refused_second_scorer_does_not_remove_the_holders_lock(tmp_path):
    out = tmp_path / "p.csv"
    context = multiprocessing.get_context("fork")
    with output_lock(out):
        second = context.Process(target=_try_once, args=(out,))
        second.start()
        second.join(timeout=30)
        assert second.exitcode == 3  # refused
        assert (tmp_path / "p.csv.lock").is_file()


def _try_once(out) -> None:
    from medrec.score import lock

    lock._HELD_LOCKS.clear()  # forked while the parent held it: be a separate scorer, not the same one
    try:
        with output_lock(out):
            os._exit(0)
    except OutputError:
        os._exit(3)


def _hammer(out, marker, rounds: int) -> None:
    """Take and release the lock ``rounds`` times; exit 1 if another holder was ever inside at the same time."""
    taken = 0
    while taken < rounds:
        try:
            with output_lock(out):
                try:
                    handle = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    os._exit(1)
                os.close(handle)
                os.unlink(marker)
            taken += 1
        except OutputError:
            continue
    os._exit(0)


def test_removing_the_file_on_release_keeps_two_scorers_apart(tmp_path):
    # the holder removes the file as it lets go; one that opened it just before must not then hold
    # a lock on the removed file while a third locks the new one
    out, marker = tmp_path / "p.csv", tmp_path / "inside"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_hammer, args=(out, marker, 150)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert not (tmp_path / "p.csv.lock").exists()
