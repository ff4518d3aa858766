"""The data-loading worker count that follows from the usable cores (data.num_workers' default)."""
from __future__ import annotations

import pytest

from selfmedmae.config import load_config
from selfmedmae.runtime import cores


@pytest.mark.parametrize("n, workers, readers", [(1, 0, 1), (2, 0, 2), (3, 1, 3), (8, 4, 4), (64, 4, 4)])
def test_workers_follow_the_cores(monkeypatch, n, workers, readers):
    monkeypatch.setattr(cores, "usable_cores", lambda: n)
    assert cores.default_workers() == workers
    assert cores.reading_threads(0) == readers
    assert cores.reading_threads(16) == 16  # an explicit worker count above the cores is kept


def test_a_config_without_num_workers_takes_the_default_and_a_set_value_wins():
    assert load_config(None, []).data.num_workers == cores.default_workers()
    assert load_config(None, ["data.num_workers=3"]).data.num_workers == 3
