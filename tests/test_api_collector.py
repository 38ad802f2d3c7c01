"""`hwlat.predict` runs with Python's cyclic garbage collector off, and leaves it as it found it:
on after the call (exceptions included), off where the caller had turned it off, on during an
export (which makes cyclic garbage); the fast path itself makes no reference cycles."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import hwlat
from hwlat import api, fastpath
from hwlat.errors import InvalidInputError
from tests.helpers.torch_modules import Rolls

DEVICE = "roofline-sd855"  # a roofline device: no table needed


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HWLAT_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_the_fast_path_runs_collection_free_and_the_collector_is_on_after(home, collector_on,
                                                                          monkeypatch):
    seen = []
    real = fastpath.to_graph

    def spy(*a, **k):
        seen.append(gc.isenabled())
        return real(*a, **k)

    monkeypatch.setattr(fastpath, "to_graph", spy)
    r = hwlat.predict(small(), device=DEVICE, input_shape=(1, 3, 32, 32))
    assert r.route == "fast" and seen == [False]
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off(home, collector_on):
    gc.disable()
    hwlat.predict(small(), device=DEVICE, input_shape=(1, 3, 32, 32))
    assert not gc.isenabled()


def test_the_collector_is_on_again_after_an_error(home, collector_on):
    with pytest.raises(InvalidInputError, match="refuses the input"):
        hwlat.predict(small(), device=DEVICE, input_shape=(1, 4, 32, 32))  # 4 channels, not 3
    assert gc.isenabled()
    with pytest.raises(InvalidInputError, match="clock"):
        hwlat.predict(small(), device=DEVICE, input_shape=(1, 3, 32, 32), clock="sundial")
    assert gc.isenabled()


@pytest.mark.export
def test_an_export_runs_with_the_collector_on(home, collector_on, monkeypatch):
    seen = []
    real = api._export

    def spy(*a, **k):
        seen.append(gc.isenabled())
        return real(*a, **k)

    monkeypatch.setattr(api, "_export", spy)
    r = hwlat.predict(Rolls().eval(), device=DEVICE, input_shape=(1, 3, 8, 8))
    assert r.route == "export" and "roll" in r.fallback and seen == [True]
    assert gc.isenabled()


def test_sections_nest_and_only_the_outer_one_turns_the_collector_on(collector_on):
    with api._collection_free():
        with api._collection_free():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner section did not turn it off, so leaves it off
        with api._collections_allowed():
            assert gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with api._collections_allowed():  # outside a section: nothing to do
        assert gc.isenabled()


def test_a_fast_path_prediction_leaves_no_cyclic_garbage(home, collector_on):
    """Reference counting frees everything a prediction made: the collector has nothing to
    find (which is why running it inside the call only costs time)."""
    model = small()
    hwlat.predict(model, device=DEVICE, input_shape=(1, 3, 32, 32))  # caches filled
    gc.disable()
    try:
        for _ in range(2):  # the first round: garbage an earlier test left, if any
            gc.collect()
            r = hwlat.predict(small(), device=DEVICE, input_shape=(1, 3, 32, 32))
            assert r.route == "fast"
            del r
        assert gc.collect() == 0
    finally:
        gc.enable()
