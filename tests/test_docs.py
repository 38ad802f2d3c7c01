"""docs/api.md's ```python blocks run, in order, in one namespace, as a reader runs them."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_api_page_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HWLAT_HOME", str(tmp_path))
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {"__name__": "docs_api"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name} block {i + 1}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "route fast" in out
    assert "no mapping for function torch.roll" in out and "route='export'" in out
    assert "refuses the input" in out and "channels" in out
    assert "best within 1.0 ms: (" in out
    assert "expected latency" in out
