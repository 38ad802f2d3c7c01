"""Quiet problems made loud, and one way of saying things everywhere: thin predictions refused
(or flagged with --estimate), ops a device cannot run refused, noisy entries flagged, `profile
--force`, `lut delete`, `--version`, `-d`, `--json` as a switch, `validate --plot` labels."""

from __future__ import annotations

import json

import pytest

from hwlat.lut import TableStore
from tests.helpers.cli import invoke_hwlat
from tests.helpers.onnx_builders import const, model, node, rand, save, tensor
from tests.helpers.tables import conv_model, profiled_table


@pytest.fixture
def m(tmp_path):
    return conv_model(tmp_path / "m.onnx", n=6)


def test_a_prediction_mostly_extrapolated_from_few_entries_is_refused(m, tmp_path):
    table = tmp_path / "t.sqlite"
    profiled_table(table, m, leave_out=5, calibrate=False)  # 1 entry of 6 kernels
    r = invoke_hwlat("predict", m, "--table", table)
    assert r.exit_code == 2
    assert "extrapolated from only 1 table entry" in r.output and "--estimate" in r.output
    assert "hwlat profile" in r.output
    r = invoke_hwlat("predict", m, "--table", table, "--estimate")
    assert r.exit_code == 0, r.output
    assert "ROUGH GUESS" in r.output and "warning:" in r.output
    r = invoke_hwlat("predict", m, "--table", table, "--estimate", "--json")
    assert json.loads(r.stdout)["thin_estimate"] is True
    profiled_table(table, m, leave_out=1, calibrate=False)  # 5 of 6: a prediction
    r = invoke_hwlat("predict", m, "--table", table)
    assert r.exit_code == 0 and "ROUGH" not in r.output, r.output


def test_no_entries_suggests_only_what_works(m, tmp_path):
    table = tmp_path / "t.sqlite"
    profiled_table(table, m, device="cpu-ort", calibrate=False)
    r = invoke_hwlat("predict", m, "--device", "cpu-tvm", "--table", table)
    assert r.exit_code == 2 and "hwlat profile MODEL.onnx --device cpu-tvm" in r.output


def test_an_op_the_device_cannot_run_is_refused(tmp_path, hwlat_home):
    sp = model([node("SparseConv3d", ["f", "coords", "w"], ["y"], domain="hwlat", subm=1,
                     kernel_size=[3, 3, 3], stride=[1, 1, 1], padding=[1, 1, 1])],
               [tensor("f", [10, 4]), tensor("coords", [10, 4], 6)], [tensor("y", [10, 8])],
               [const("w", rand(27, 4, 8))], extra_opsets=[("hwlat", 1)])
    path = save(sp, tmp_path / "sp.onnx")
    table = tmp_path / "t.sqlite"
    profiled_table(table, conv_model(tmp_path / "m.onnx"), calibrate=False)
    r = invoke_hwlat("predict", path, "--device", "cpu-ort", "--table", table)
    assert r.exit_code == 2 and "cannot run hwlat.SparseConv3d" in r.output


def test_noisy_entries_are_flagged_then_retimed_or_deleted(m, tmp_path):
    table = tmp_path / "t.sqlite"
    keys = profiled_table(table, m, leave_out=0, noisy=2, calibrate=False)
    r = invoke_hwlat("lut", "show", "--table", table, "--json")
    assert json.loads(r.stdout)["devices"] == [{"device": "cpu-ort", "entries": 6, "noisy": 2}]
    r = invoke_hwlat("lut", "show", "-d", "cpu-ort", "--table", table)
    assert "2 of 6 entries are noisy" in r.output and "--force" in r.output
    r = invoke_hwlat("predict", m, "--table", table, "--breakdown")
    assert r.output.count("(noisy)") == 2 and "--force" in r.output
    r = invoke_hwlat("profile", m, "--table", table, "--force")
    assert r.exit_code == 0, r.output
    assert "6 kernels measured (timed again: --force)" in r.output
    with TableStore(table, readonly=True) as s:
        assert all(e.measured_at != "2026-01-01T00:00:00+00:00" for e in s.entries("cpu-ort"))
    r = invoke_hwlat("lut", "delete", "--device", "cpu-ort", "--key", keys[0], "--table", table)
    assert r.exit_code == 0 and "deleted 1 entries" in r.output
    r = invoke_hwlat("lut", "delete", "-d", "cpu-ort", "--key", keys[0], "--table", table)
    assert r.exit_code == 2 and "no entry" in r.output
    r = invoke_hwlat("lut", "delete", "-d", "cpu-ort", "--table", table)
    assert r.exit_code == 0 and "deleted 5 entries" in r.output
    with TableStore(table, readonly=True) as s:
        assert s.entries() == [] and s.calibration("cpu-ort") == []


def test_version_and_switches(hwlat_cli):
    from hwlat import __version__

    r = hwlat_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"hwlat {__version__}"
    for args in (["predict", "--help"], ["lut", "show", "--help"], ["zoo", "--help"]):
        r = invoke_hwlat(*args)
        line = next(x for x in r.output.splitlines() if "--json" in x)
        assert "<bool>" not in line and "BOOLEAN" not in line, line
    r = invoke_hwlat("zoo", "--json")
    assert r.exit_code == 0 and {"name", "description"} <= json.loads(r.stdout)[0].keys()


@pytest.mark.parametrize("command", [
    ["profile"], ["predict"], ["calibrate"], ["validate"], ["compile"], ["search", "--latency-ms", "1"],
    ["nas", "predict", "--space", "nb201"], ["lut", "show"], ["lut", "export"], ["lut", "import"], ["lut", "delete"],
    ["lut", "fit"]])
def test_every_device_option_takes_d(command):
    from typer.main import get_command

    from hwlat.cli import app

    cmd = get_command(app)
    for name in command:
        if name.startswith("--"):
            break
        cmd = cmd.commands[name] if hasattr(cmd, "commands") else cmd
    opts = {o for p in cmd.params for o in p.opts}
    assert "--device" in opts and "-d" in opts
    if "--tracker" in opts or "--rpc" in opts:
        assert {"--tracker", "--rpc"} <= opts
        assert next(p for p in cmd.params if "--rpc" in p.opts).hidden


def test_validate_plot_names_its_points(m, tmp_path, monkeypatch):
    from hwlat import plot

    seen = []
    real = plot.scatter

    def spy(rows, path, device):
        import matplotlib.axes

        orig = matplotlib.axes.Axes.annotate
        monkeypatch.setattr(matplotlib.axes.Axes, "annotate",
                            lambda self, text, *a, **k: (seen.append(text), orig(self, text, *a, **k))[1])
        return real(rows, path, device)

    monkeypatch.setattr("hwlat.plot.scatter", spy)
    table = tmp_path / "t.sqlite"
    profiled_table(table, m, leave_out=0, calibrate=False)
    r = invoke_hwlat("validate", m, "--table", table, "--plot", tmp_path / "v.png")
    assert r.exit_code == 0, r.output
    assert seen == ["m"] and (tmp_path / "v.png").stat().st_size > 0


def test_calibrate_json(tmp_path):
    models = [conv_model(tmp_path / f"m{i}.onnx", n=2 + i, seed=i) for i in range(3)]
    table = tmp_path / "t.sqlite"
    for p in models:
        profiled_table(table, p, leave_out=0, calibrate=False)
    r = invoke_hwlat("calibrate", *models, "-d", "cpu-ort", "--table", table, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["device"] == "cpu-ort" and len(doc["models"]) == 3 and doc["calibrated_models"] == 3
    assert doc["correction"] is not None and all(x["measured_ms"] > 0 for x in doc["models"])


def test_predict_clock_cpu_adds_up_thread_cpu_times(m, tmp_path):
    from hwlat.lut.store import CpuTime

    table = tmp_path / "t.sqlite"
    keys = profiled_table(table, m, leave_out=0, calibrate=False)
    with TableStore(table) as store:
        entries = {e.key: e for e in store.entries("cpu-ort")}
        store.put_many(list(entries.values()),
                       cpu_times=[CpuTime("cpu-ort", k, entries[k].median_ms / 4, 0.0, 9) for k in keys[1:]])
    wall = json.loads(invoke_hwlat("predict", m, "--table", table, "--json").stdout)
    r = invoke_hwlat("predict", m, "--table", table, "--json", "--clock", "cpu")
    assert r.exit_code == 0, r.output
    cpu = json.loads(r.stdout)
    assert wall["clock"] == "wall" and cpu["clock"] == "cpu"
    by_key = {k["key"]: k for k in cpu["kernels"]}
    wall_ms = {k["key"]: k["ms"] for k in wall["kernels"]}
    assert by_key[keys[0]]["source"] == "table (wall: no CPU time)" and by_key[keys[0]]["ms"] == wall_ms[keys[0]]
    assert all(by_key[k]["source"] == "table (cpu)" and by_key[k]["ms"] == pytest.approx(wall_ms[k] / 4)
               for k in keys[1:])
    assert cpu["kernel_sum_ms"] < wall["kernel_sum_ms"]
    r = invoke_hwlat("predict", m, "--table", table, "--clock", "cpu")
    assert r.exit_code == 0 and "(thread CPU time)" in r.output, r.output


def test_predict_clock_errors_say_what_to_run(m, tmp_path):
    table = tmp_path / "t.sqlite"
    profiled_table(table, m, leave_out=0, calibrate=False)  # wall-clock entries, no CPU times
    r = invoke_hwlat("predict", m, "--table", table, "--clock", "gpu")
    assert r.exit_code == 2 and r.output.count("\n") == 0
    assert "unknown clock 'gpu' (--clock): choose wall or cpu" in r.output
    r = invoke_hwlat("predict", m, "--table", table, "--clock", "cpu")
    assert r.exit_code == 2 and r.output.count("\n") == 0
    assert "no thread CPU times for device 'cpu-ort'" in r.output
    assert "hwlat profile MODEL.onnx --device cpu-ort --force" in r.output and "--clock wall" in r.output
