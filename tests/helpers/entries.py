"""Valid entries for tests: one builder with overrides, and a hypothesis strategy."""

from __future__ import annotations

import json
from datetime import UTC

from hypothesis import strategies as st

from hwlat.lut import Entry

AT = "2025-01-31T12:00:00+00:00"


def entry(
    key: str = "conv|Conv|in:f32[1,3,8,8]|out:f32[1,4,8,8]|w:f32[4,3,3,3]|", **overrides
) -> Entry:
    fields = dict(
        device="cpu-ort",
        key=key,
        kind="conv",
        median_ms=1.25,
        q1_ms=1.0,
        q3_ms=1.5,
        cv=0.05,
        repeats=50,
        threads=4,
        cpu="Test CPU @ 3.0GHz",
        versions='{"onnxruntime": "1.23.0"}',
        pipeline="ort-profiler",
        measured_at=AT,
    )
    return Entry(**(fields | overrides))


_times = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
_text = st.text()  # any Unicode but lone surrogates: NUL, newlines, quotes and commas included
_name = st.text(min_size=1).filter(str.strip)


@st.composite
def entries(draw) -> Entry:
    q1, median, q3 = sorted(draw(st.lists(_times, min_size=3, max_size=3)))
    return Entry(
        device=draw(_name),
        key=draw(_name),
        kind=draw(_text),
        median_ms=median,
        q1_ms=q1,
        q3_ms=q3,
        cv=draw(_times),
        repeats=draw(st.integers(1, 2**63 - 1)),
        threads=draw(st.integers(1, 1024)),
        cpu=draw(_text),
        versions=json.dumps(draw(st.dictionaries(_text, _text, max_size=3))),
        pipeline=draw(_text),
        measured_at=draw(st.datetimes(timezones=st.just(UTC))).isoformat(),
    )


entry_lists = st.lists(entries(), max_size=8, unique_by=lambda e: (e.device, e.key))
