"""`hwlat lut fit` with a multi-device prior (--prior-devices, --stored-prior, --propose) and
`hwlat lut prior import`, end to end; bad files refused with one line naming the row, exit 2, the
table untouched."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from hwlat.lut import TableStore
from hwlat.lut.prior import PRIOR_MODEL_KEY
from hwlat.nas.nb201_prior import nb201_has_path
from hwlat.nas.spaces import NB201_SIZE, nb201_arch, nb201_index
from tests.helpers.cli import invoke_hwlat as _cli
from tests.helpers.prior import (
    DEVICES,
    _dup,
    _nan,
    _neg,
    true_ms,
    write_prior_csv,
)

THIRTEEN = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201" / "hw_nas_bench_13_devices.csv"


@pytest.fixture
def prior_csv(prior, archs, tmp_path):
    return write_prior_csv(tmp_path / "prior.csv", prior, archs)


def _measure(path, prior, archs, rows):
    y = true_ms(prior)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "latency_ms"])
        w.writerows([archs[i], repr(float(y[i]))] for i in rows)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def test_propose_fit_predict_end_to_end(prior, archs, prior_csv, tmp_path):
    r = _cli("lut", "fit", "--space", "nb201", "--propose", 10, "--prior-devices", prior_csv,
             "--no-hw-column")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "index,arch" and len(lines) == 11
    proposed = [line.split(",", 1)[1] for line in lines[1:]]
    assert len(set(proposed)) == 10 and all(nb201_has_path(a) for a in proposed)

    m = _measure(tmp_path / "m.csv", prior, archs, [nb201_index(a) for a in proposed])
    table = tmp_path / "t.sqlite"
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "newdev",
             "--prior-devices", prior_csv, "--no-hw-column", "--table", table)
    assert r.exit_code == 0, r.output
    assert "prior model for 'newdev'" in r.output
    queried = [nb201_arch(i) for i in (5, 777, 4242, 15000)]
    q = tmp_path / "q.csv"
    q.write_text("arch\n" + "\n".join(queried) + "\n")
    r = _cli("nas", "predict", "--space", "nb201", "--device", "newdev", "--archs", q,
             "--table", table)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(r.stdout.splitlines()))
    y = true_ms(prior)
    for row, a in zip(rows, queried, strict=True):
        assert row["arch"] == a
        assert float(row["latency_ms"]) == pytest.approx(y[nb201_index(a)], rel=0.01)


def test_stored_prior_is_used_by_fit_and_propose(prior, archs, prior_csv, tmp_path):
    table = tmp_path / "t.sqlite"
    r = _cli("lut", "fit", "--space", "nb201", "--propose", 5, "--stored-prior", "--no-hw-column",
             "--table", table)
    assert r.exit_code == 2 and "no table" in r.output
    r = _cli("lut", "prior", "import", prior_csv, "--space", "nb201", "--table", table)
    assert r.exit_code == 0, r.output
    assert all(d in r.output for d in DEVICES)
    r = _cli("lut", "fit", "--space", "nb201", "--propose", 5, "--stored-prior", "--no-hw-column",
             "--table", table)
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 6
    m = _measure(tmp_path / "m.csv", prior, archs, range(1000, 13000, 1000))
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "dev2",
             "--stored-prior", "--table", table)
    assert r.exit_code == 0, r.output
    with TableStore(table, readonly=True) as store:
        assert [e.key for e in store.entries("dev2")] == [PRIOR_MODEL_KEY]
    # a per-kernel fit may replace the prior model under the same name (both are fitted tables)
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "dev2",
             "--reference-device", "roofline-sd855", "--table", table)
    assert r.exit_code == 0, r.output
    with TableStore(table, readonly=True) as store:
        assert PRIOR_MODEL_KEY not in store.keys("dev2")


@pytest.mark.parametrize("edit, message", [
    (_dup, "line 22: arch"), (_nan, "line 9: latency 'nan'"), (_neg, "line 10: latency '-1.5'"),
    (lambda rows: rows.pop(), "1 of the 15625 architectures of nb201 are missing"),
])
def test_bad_prior_is_refused_and_the_table_untouched(prior, archs, tmp_path, edit, message):
    good = write_prior_csv(tmp_path / "good.csv", prior, archs)
    bad = write_prior_csv(tmp_path / "bad.csv", prior, archs, edit=edit)
    table = tmp_path / "t.sqlite"
    assert _cli("lut", "prior", "import", good, "--space", "nb201", "--table", table).exit_code == 0
    m = _measure(tmp_path / "m.csv", prior, archs, range(10, 100, 10))
    before = _digest(table)
    for args in (("lut", "prior", "import", bad, "--space", "nb201"),
                 ("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "d",
                  "--prior-devices", bad)):
        r = _cli(*args, "--table", table)
        assert r.exit_code == 2 and r.output.startswith("error: ") and message in r.output
        assert len(r.output.strip().splitlines()) == 1
        assert _digest(table) == before


@pytest.mark.parametrize("rows, message", [
    ([["|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|", "3.0"]], "line 3: "),
    ([[nb201_arch(11), "3.0"]], "line 3: '" + nb201_arch(11).replace("|", "\\|")),
])
def test_bad_measurements_are_refused_naming_the_row(prior_csv, tmp_path, rows, message):
    m = tmp_path / "m.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "latency_ms"])
        w.writerow([nb201_arch(11), "2.0"])
        w.writerows(rows)
    table = tmp_path / "t.sqlite"
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "d",
             "--prior-devices", prior_csv, "--table", table)
    assert r.exit_code == 2 and r.output.startswith("error: ")
    assert message.replace("\\|", "|") in r.output
    assert not table.exists()


def test_flag_combinations_are_refused(prior_csv, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(f"arch,latency_ms\n{nb201_arch(11)},2\n{nb201_arch(12)},3\n")
    for args, message in [
        (("--propose", 3), "needs a multi-device prior"),
        (("--propose", 3, "--prior-devices", prior_csv, "--measurements", m), "takes no --measurements"),
        (("--prior-devices", prior_csv, "--stored-prior", "--measurements", m, "--device", "x"),
         "not both"),
        (("--prior-devices", prior_csv, "--zero-work", "--measurements", m, "--device", "x"),
         "--zero-work"),
        (("--measurements", m), "needs --measurements M.csv and --device"),
    ]:
        r = _cli("lut", "fit", "--space", "nb201", *args, "--table", tmp_path / "t.sqlite")
        assert r.exit_code == 2 and message in r.output, (args, r.output)


@pytest.mark.heavy
@pytest.mark.skipif(not THIRTEEN.exists(), reason="needs ../shared/data/nb201/hw_nas_bench_13_devices.csv")
def test_held_out_phone_from_ten_proposed_cells(tmp_path):
    """HW-NAS-Bench: the Samsung A50 left out of the prior, ten proposed cells measured on it:
    the ranking of 1,000 other cells follows its measurements."""
    from scipy.stats import spearmanr

    with open(THIRTEEN, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    held = header.index("samsung_a50")
    prior_csv = tmp_path / "prior.csv"
    with open(prior_csv, "w", newline="") as f:
        csv.writer(f).writerows([c for j, c in enumerate(r) if j != held] for r in rows)
    truth = {r[1]: float(r[held]) for r in rows[1:]}
    r = _cli("lut", "fit", "--space", "nb201", "--propose", 10, "--prior-devices", prior_csv)
    proposed = [line.split(",", 1)[1] for line in r.stdout.splitlines()[1:]]
    m = tmp_path / "m.csv"
    m.write_text("arch,latency_ms\n" + "".join(f"{a},{truth[a]}\n" for a in proposed))
    table = tmp_path / "t.sqlite"
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "a50",
             "--prior-devices", prior_csv, "--table", table)
    assert r.exit_code == 0, r.output
    queried = [nb201_arch(i) for i in np.random.default_rng(0).choice(NB201_SIZE, 1000, replace=False)]
    q = tmp_path / "q.csv"
    q.write_text("arch\n" + "\n".join(queried) + "\n")
    r = _cli("nas", "predict", "--space", "nb201", "--device", "a50", "--archs", q, "--table", table)
    pred = [float(row["latency_ms"]) for row in csv.DictReader(r.stdout.splitlines())]
    assert spearmanr(pred, [truth[a] for a in queried])[0] > 0.9


def test_refusals_are_one_line_and_exit_2_in_a_subprocess(tmp_path):
    """As a user runs it: a prior file that lacks cells, and a measurement of an unknown cell."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    short = tmp_path / "short.csv"
    short.write_text(f"arch,dev_a\n{nb201_arch(0)},1.0\n{nb201_arch(1)},2.0\n")
    m = tmp_path / "m.csv"
    m.write_text("arch,latency_ms\n|nor_conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|,2\n")
    table = tmp_path / "t.sqlite"
    for args, message in [
        (("lut", "prior", "import", short, "--space", "nb201"), "15623 of the 15625 architectures"),
        (("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "x",
          "--prior-devices", short), f"{m} line 2: "),
    ]:
        r = subprocess.run([sys.executable, "-m", "hwlat.cli", *map(str, args), "--table", str(table)],
                           capture_output=True, text=True, cwd=root, timeout=300)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: ") and message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not table.exists()
