"""The README's Python snippets run as written, on a small table in $HWLAT_HOME: cpu-ort entries
with their kernels' work (the OFA table estimates the rest) and an NB201 device `pixel3`."""

from __future__ import annotations

import re

from hwlat.lut import TableStore
from tests.helpers.cli import ROOT
from tests.helpers.fewshot import nb201_fit_space
from tests.helpers.tables import conv_model, entry, profiled_table


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_readme_python_runs(tmp_path, hwlat_home, capsys):
    blocks = python_blocks()
    assert blocks
    table = hwlat_home / "tables.sqlite"
    profiled_table(table, conv_model(tmp_path / "m.onnx"), leave_out=0)
    _, reference, features, _ = nb201_fit_space()
    with TableStore(table) as s:
        s.put_many([entry("pixel3", k, k.partition("|")[0], ms) for k, ms in reference.items()],
                   [(k, k.partition("|")[0], int(m), int(b)) for k, (m, b) in features.items()])
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert "1,000,000 OFA subnets" in capsys.readouterr().out
