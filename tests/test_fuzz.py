"""A small fuzz campaign (benchmarks/fuzz.py runs the large one): a few hundred mutants of
hwlat's seed graphs and of a zoo model through load -> fuse -> summarize, and every page of a
small table damaged in turn through every command that opens a table. Nothing may end in a
traceback, a signal, a MemoryError or a hang; a refused table keeps its bytes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from benchmarks.fuzz import (
    BAD,
    RSS_GOAL,
    builtin_seeds,
    model_campaign,
    run_limited,
    table_campaign,
)
from hwlat.errors import InvalidModelError

DATA = Path(__file__).resolve().parent / "data"
MUTANTS = 200


def _raise(e: BaseException):
    raise e


@pytest.mark.parametrize("fn, outcome", [
    (lambda: None, "ok"),
    (lambda: _raise(InvalidModelError("bad")), "refused"),
    (lambda: _raise(KeyError("k")), "traceback"),
    (lambda: bytearray(8 << 30), "memory"),
    (lambda: os.kill(os.getpid(), signal.SIGKILL), "abort"),
    (lambda: time.sleep(30), "hang"),
])
def test_the_worker_classifies_every_outcome(fn, outcome):
    assert run_limited(fn, timeout_s=3).outcome == outcome


def test_model_mutants_are_loaded_or_refused(tmp_path):
    seeds = builtin_seeds() | {"zoo:sparse_convnet": (DATA / "zoo_sparse_convnet.onnx").read_bytes()}
    c = model_campaign(seeds, MUTANTS, seed=1234, timeout_s=10, folder=tmp_path)
    assert sum(c.counts.values()) == MUTANTS
    assert not any(c.counts.get(k) for k in BAD), c.examples
    assert c.counts["refused"] > MUTANTS // 4 and c.counts["ok"] > MUTANTS // 10, c.counts
    assert c.peak_rss < RSS_GOAL


def test_damaged_tables_are_refused_untouched(tmp_path):
    c = table_campaign(tmp_path, timeout_s=10, variants=("btree-header",))
    assert sum(c.counts.values()) >= 14 * 5  # commands x pages
    assert set(c.counts) <= {"ok", "refused"}, (c.counts, c.examples)
    assert c.counts["refused"] > 0
