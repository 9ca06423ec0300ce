"""Extraction's thread count: --threads when given, else the cores other processes leave free."""

import pytest

from precompute import threads


@pytest.fixture
def four_cores(monkeypatch):
    """A four-core machine whose total and own CPU use the test sets (percent, psutil's units)."""
    usage = {"total": 0.0, "own": 0.0}
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads.psutil, "cpu_percent", lambda interval=None: usage["total"])
    monkeypatch.setattr(threads.psutil.Process, "cpu_percent", lambda self, interval=None: usage["own"])
    return usage


def test_fixed_thread_count_wins(four_cores):
    four_cores["total"] = 100.0  # every core busy elsewhere
    assert threads.ThreadChooser(3).choose() == 3


@pytest.mark.parametrize(("total", "own", "expected"), [
    (0.0, 0.0, 4),      # quiet machine: every core
    (100.0, 400.0, 4),  # the busy cores are our own (the previous chunk)
    (50.0, 0.0, 2),     # two cores busy elsewhere
    (100.0, 0.0, 1),    # all busy elsewhere: one thread, never zero
    (10.0, 0.0, 4),     # 0.4 of a core elsewhere: background noise, the core counts as free
    (15.0, 0.0, 3),     # 0.6 of a core elsewhere: that core is taken
])
def test_free_cores_are_counted_from_the_others_use(four_cores, total, own, expected):
    four_cores.update(total=total, own=own)
    assert threads.ThreadChooser().choose() == expected


def test_intra_op_threads_restores_the_previous_count():
    import torch

    before = torch.get_num_threads()
    with threads.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
