"""A new device of the OFA MobileNetV3 space from whole-net timings with a multi-device prior
(`hwlat.nas.ofa_prior`), end to end through the CLI on small synthetic device tables: propose,
fit, predict; the one-line arch form; bad files refused with one line naming the row, exit 2,
the table untouched."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.nas.ofa_prior import ofa_arch_text, parse_ofa_arch_text
from hwlat.nas.spaces import OFA_MBV3
from tests.helpers.cli import invoke_hwlat as _cli

N_ARCHS = 40


@pytest.fixture(scope="module")
def archs() -> list[str]:
    rng = np.random.default_rng(3)
    out: dict[str, None] = {}
    while len(out) < N_ARCHS:
        out[ofa_arch_text(OFA_MBV3.sample(rng))] = None
    return list(out)


def _devices(archs: list[str]) -> dict[str, np.ndarray]:
    """Two prior devices that weigh the arch's parts differently, and a new one between them."""
    parsed = [parse_ofa_arch_text(a) for a in archs]
    a = np.array([1.0 + sum(p["ks"][:4 * 5]) / 40 * sum(p["d"]) / 10 + (p["r"] / 160) ** 2 for p in parsed])
    b = np.array([0.5 + sum(p["e"]) / 30 * sum(p["d"]) / 12 + p["r"] / 400 for p in parsed])
    return {"dev_a": a, "dev_b": b, "new": 1.7 * np.sqrt(a * b)}


def _write_prior(path: Path, archs, edit=None) -> Path:
    dev = _devices(archs)
    rows = [["arch", "dev_a", "dev_b"], *([a, repr(float(dev["dev_a"][i])), repr(float(dev["dev_b"][i]))]
                                          for i, a in enumerate(archs))]
    if edit is not None:
        edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def test_one_line_form_round_trips_and_ignores_inactive_blocks():
    arch = OFA_MBV3.sample(np.random.default_rng(0))
    text = ofa_arch_text(arch)
    back = parse_ofa_arch_text(text)
    assert ofa_arch_text(back) == text and back["d"] == arch["d"] and back["r"] == arch["r"]
    other = {**arch, "ks": list(arch["ks"])}
    s = 0
    other["ks"][s * 4 + 3] = 7 if other["ks"][s * 4 + 3] != 7 else 5  # a block beyond the depth?
    assert (ofa_arch_text(other) == text) == (arch["d"][0] < 4)
    for bad, message in [("r224-k35.35.35.35-e33.33.33.33", "5 stages"),
                         ("r225-k35.35.35.35.35-e33.33.33.33.33", "resolution"),
                         ("r224-k39.35.35.35.35-e33.33.33.33.33", "ks"),
                         ("r224-k3.35.35.35.35-e3.33.33.33.33", "d[0]"),
                         ("r224-k35.35.35.35.35-e3.33.33.33.33", "stage 1"),
                         ("224", "expected the form")]:
        with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_ofa_arch_text(bad)


def test_propose_fit_predict_end_to_end(archs, tmp_path):
    prior = _write_prior(tmp_path / "prior.csv", archs)
    r = _cli("lut", "fit", "--space", "ofa-mbv3", "--propose", 8, "--prior-devices", prior,
             "--no-hw-column")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "index,arch" and len(lines) == 9
    proposed = [line.split(",", 1)[1] for line in lines[1:]]
    assert len(set(proposed)) == 8 and set(proposed) <= set(archs)

    truth = dict(zip(archs, _devices(archs)["new"], strict=True))
    m = tmp_path / "m.csv"
    m.write_text("arch,latency_ms\n" + "".join(f"{a},{float(truth[a])!r}\n" for a in proposed))
    table = tmp_path / "t.sqlite"
    r = _cli("lut", "fit", "--space", "ofa-mbv3", "--measurements", m, "--device", "newdev",
             "--prior-devices", prior, "--no-hw-column", "--table", table)
    assert r.exit_code == 0, r.output
    assert "prior model for 'newdev'" in r.output
    queried = [a for a in archs if a not in proposed][:10]
    q = tmp_path / "q.csv"
    q.write_text("arch\n" + "\n".join(queried) + "\n")
    r = _cli("nas", "predict", "--space", "ofa-mbv3", "--device", "newdev", "--archs", q,
             "--table", table)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert [row["arch"] for row in rows] == queried
    for row in rows:
        assert float(row["latency_ms"]) == pytest.approx(truth[row["arch"]], rel=0.01)

    # the prior stored once, then fitted from it; an arch outside the prior is refused by name
    r = _cli("lut", "prior", "import", prior, "--space", "ofa-mbv3", "--table", table)
    assert r.exit_code == 0 and "dev_a, dev_b" in r.output, r.output
    r = _cli("lut", "fit", "--space", "ofa-mbv3", "--measurements", m, "--device", "dev2",
             "--stored-prior", "--table", table)  # with hwlat's roofline column
    assert r.exit_code == 0, r.output
    outside = ofa_arch_text(OFA_MBV3.sample(np.random.default_rng(99)))
    q.write_text(f"arch\n{queried[0]}\n{outside}\n")
    r = _cli("nas", "predict", "--space", "ofa-mbv3", "--device", "dev2", "--archs", q, "--table", table)
    assert r.exit_code == 2 and outside in r.output and "not among the prior's 40" in r.output
    # a device fitted for one space is not queried as another
    r = _cli("nas", "predict", "--space", "nb201", "--device", "dev2", "--archs", q, "--table", table)
    assert r.exit_code == 2 and r.output.startswith("error: ")


def _dup(rows):
    rows.insert(5, list(rows[2]))


def _same_network(rows):  # the same net written with a leading zero in the resolution
    rows.insert(5, [rows[2][0].replace("-k", "-k", 1).replace("r", "r0", 1), *rows[2][1:]])


def _nan(rows):
    rows[4][1] = "nan"


def _neg(rows):
    rows[7][2] = "-2"


def _other_space(rows):  # an NB201 cell in an OFA prior
    rows[3][0] = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"


def _unknown(rows):
    rows[9][0] = "r224-k99.35.35.35.35-e33.33.33.33.33"


@pytest.mark.parametrize("edit, message", [
    (_dup, "line 6: arch"), (_same_network, "line 6: arch"), (_nan, "line 5: latency 'nan'"),
    (_neg, "line 8: latency '-2'"), (_unknown, "line 10: OFA arch"),
    (_other_space, "line 4: OFA arch"),
    (lambda rows: rows[:] + [["x"]], "fields"),
])
def test_bad_prior_is_refused_and_the_table_untouched(archs, tmp_path, edit, message):
    good = _write_prior(tmp_path / "good.csv", archs)
    bad = _write_prior(tmp_path / "bad.csv", archs, edit=edit)
    if message == "fields":
        with open(bad, "a") as f:
            f.write("x\n")
    table = tmp_path / "t.sqlite"
    assert _cli("lut", "prior", "import", good, "--space", "ofa-mbv3", "--table", table).exit_code == 0
    truth = _devices(archs)["new"]
    m = tmp_path / "m.csv"
    m.write_text("arch,latency_ms\n" + "".join(f"{archs[i]},{float(truth[i])!r}\n" for i in range(10, 20)))
    before = _digest(table)
    for args in (("lut", "prior", "import", bad, "--space", "ofa-mbv3"),
                 ("lut", "fit", "--space", "ofa-mbv3", "--measurements", m, "--device", "d",
                  "--prior-devices", bad)):
        r = _cli(*args, "--table", table)
        assert r.exit_code == 2 and r.output.startswith("error: ") and message in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
        assert _digest(table) == before


def test_bad_measurements_are_refused_naming_the_row(archs, tmp_path):
    prior = _write_prior(tmp_path / "prior.csv", archs)
    outside = ofa_arch_text(OFA_MBV3.sample(np.random.default_rng(99)))
    table = tmp_path / "t.sqlite"
    for body, message in [
        (f"{archs[0]},2.0\nr224-k3.3.3.3.3-e3.3.3.3.3,2\n", "line 3: OFA arch"),
        (f"{archs[0]},2.0\n{archs[0]},3.0\n", "line 3: "),
        (f"{archs[0]},2.0\n{archs[1]},-3\n", "line 3: latency_ms '-3'"),
        (f"{archs[0]},2.0\n{outside},3.0\n", "not among the prior's"),
    ]:
        m = tmp_path / "m.csv"
        m.write_text("arch,latency_ms\n" + body)
        r = _cli("lut", "fit", "--space", "ofa-mbv3", "--measurements", m, "--device", "d",
                 "--prior-devices", prior, "--no-hw-column", "--table", table)
        assert r.exit_code == 2 and r.output.startswith("error: ") and message in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
        assert not table.exists()


def test_ofa_needs_a_multi_device_prior(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("arch,latency_ms\nr224-k33.33.33.33.33-e33.33.33.33.33,2\n")
    r = _cli("lut", "fit", "--space", "ofa-mbv3", "--measurements", m, "--device", "d",
             "--table", tmp_path / "t.sqlite")
    assert r.exit_code == 2 and "--prior-devices" in r.output
