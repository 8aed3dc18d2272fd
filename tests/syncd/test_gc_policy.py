"""The daemon's garbage-collector policy: parsed strictly, applied whole, reversible."""

from __future__ import annotations

import gc

import pytest

from syncd import gc_policy


@pytest.mark.parametrize("value", ["", "  ", None])
def test_unset_means_the_default(value):
    assert gc_policy.thresholds_from_env(value) == gc_policy.DEFAULT_THRESHOLDS


def test_three_integers_override_the_default():
    assert gc_policy.thresholds_from_env("1000,20,5000") == (1000, 20, 5000)


@pytest.mark.parametrize("value", ["700,10", "700,10,10000,1", "a,b,c", "700,0,10000", "-1,10,10", "700;10;10000"])
def test_anything_else_is_refused(value):
    with pytest.raises(ValueError, match="SYNCD_GC_THRESHOLD"):
        gc_policy.thresholds_from_env(value)


def test_apply_freezes_what_is_alive_and_undo_restores():
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    keep = [[i] for i in range(10)]  # tracked containers alive at apply time
    previous = gc_policy.apply((900, 11, 12345))
    try:
        assert previous == before
        assert gc.get_threshold() == (900, 11, 12345)
        assert gc.get_freeze_count() >= frozen_before + len(keep)
    finally:
        gc_policy.undo(previous)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    del keep
