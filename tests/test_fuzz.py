"""A small fuzz campaign (benchmarks/fuzz.py runs the large one): a few hundred mutants of
hwlat's seed graphs and of a zoo model through load -> fuse -> summarize, and every page of a
small table damaged in turn through every command that opens a table; then a sample of both
through the `hwlat` command itself (a few real subprocesses, the rest the same entry point in
forked workers). Nothing may end in a traceback, a signal, a MemoryError or a hang; a refusal is
exit code 2 and one `error:` line; a refused table keeps its bytes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from benchmarks.fuzz import (
    BAD,
    CLI_BAD,
    RSS_GOAL,
    builtin_seeds,
    cli_model_campaign,
    cli_table_campaign,
    cli_table_commands,
    model_campaign,
    run_cli,
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


@pytest.mark.slow
def test_model_mutants_are_loaded_or_refused(tmp_path):
    seeds = builtin_seeds() | {"zoo:sparse_convnet": (DATA / "zoo_sparse_convnet.onnx").read_bytes()}
    c = model_campaign(seeds, MUTANTS, seed=1234, timeout_s=10, folder=tmp_path)
    assert sum(c.counts.values()) == MUTANTS
    assert not any(c.counts.get(k) for k in BAD), c.examples
    assert c.counts["refused"] > MUTANTS // 4 and c.counts["ok"] > MUTANTS // 10, c.counts
    assert c.peak_rss < RSS_GOAL


@pytest.mark.slow
def test_damaged_tables_are_refused_untouched(tmp_path):
    c = table_campaign(tmp_path, timeout_s=10, variants=("btree-header",))
    assert sum(c.counts.values()) >= 14 * 5  # commands x pages
    assert set(c.counts) <= {"ok", "refused"}, (c.counts, c.examples)
    assert c.counts["refused"] > 0


@pytest.mark.parametrize("fork", [False, True])
def test_the_cli_cases_are_classified_by_the_readme_promise(tmp_path, fork):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a table")
    r = run_cli(["lut", "show", "--table", junk], tmp_path, timeout_s=120, fork=fork)
    assert r.outcome == "refused" and r.detail.startswith("error: ") and "SQLite" in r.detail, r
    # a usage error: exit 2 with click's usage text, not one error line
    r = run_cli(["lut", "show", "--bogus"], tmp_path, timeout_s=120, fork=fork)
    assert r.outcome == "lines", r
    assert run_cli(["--version"], tmp_path, timeout_s=120, fork=fork).outcome == "ok"
    assert run_cli(["--version"], tmp_path, timeout_s=0.01, fork=fork).outcome == "hang"


@pytest.mark.slow
def test_model_mutants_through_the_cli(tmp_path):
    seeds = builtin_seeds()
    c = cli_model_campaign(seeds, 20, seed=77, timeout_s=120, folder=tmp_path, subprocess_every=10)
    assert c.counts["subprocesses"] == 2
    assert sum(c.counts[k] for k in ("ok", "refused", *CLI_BAD)) == 20
    assert not any(c.counts.get(k) for k in CLI_BAD), c.examples
    assert c.counts["refused"] > 0 and c.counts["ok"] > 0, c.counts
    assert c.peak_rss < RSS_GOAL


@pytest.mark.slow
def test_a_damaged_table_through_every_cli_command_that_opens_one(tmp_path):
    """The last page damaged (the others: benchmarks/fuzz.py), through every command; each
    refusal names the damage, so each command reached the table."""
    c = cli_table_campaign(tmp_path, timeout_s=120, variants=("btree-header",),
                           pages=lambda page: page == 9, subprocess_every=7, control=False)
    n = len(cli_table_commands({"out": tmp_path} | dict.fromkeys(
        ("json", "csv", "ofa", "corpus", "measured", "prior", "seed", "archs"), "x"), tmp_path))
    assert n >= 20 and c.counts["refused"] == n, (c.counts, c.examples)
    assert all("damaged" in line for _, line in c.examples["refused"]), c.examples["refused"]
    assert c.counts["subprocesses"] == 3
    assert c.peak_rss < RSS_GOAL


def test_a_huge_declared_input_is_weighed_before_it_is_made(tmp_path):
    """Found by the CLI campaign: an input declared [1, 2^31, 8, 16] whose product no shape
    inference resolves; the one onnxruntime run that measures shapes must refuse it by its
    declared size, not allocate 2 TiB first (a MemoryError)."""
    import onnx

    from hwlat.graph import load

    m = onnx.ModelProto()
    m.ParseFromString(builtin_seeds()["attention"])
    kt = next(i for i in m.graph.input if i.name == "kt")
    kt.type.tensor_type.shape.dim[1].dim_value = 2**31
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    r = run_limited(lambda: load(path), timeout_s=60)
    assert r.outcome == "refused" and "over the 1024 MiB" in r.detail, r
