"""What a compile leaves on disk: the library and its JSON sidecar, each written atomically.

The sidecar (`model.so.json`) says how to call the library (input names, shapes, dtypes) and
what it was built for; it carries the library's sha256, so a sidecar left from another compile
is refused instead of trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwlat.errors import InvalidInputError

SIDECAR_FORMAT = 1
# output suffix -> what export_library writes for it
ARTIFACT_KINDS = {
    ".so": "shared library",  # loadable where the target runs; a cross target needs its linker
    ".tar": "object archive",  # objects to link on the device; needs no linker here
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Sidecar:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    target: dict[str, Any]  # the target as JSON data
    target_kind: str
    pipeline: str
    tuning_db: str | None
    library_sha256: str
    model: str  # the ONNX file it was compiled from
    hwlat: str  # hwlat's version
    format: int = SIDECAR_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


def sidecar_path(library: str | os.PathLike) -> Path:
    return Path(f"{library}.json")


def artifact_kind(output: Path) -> str:
    if output.suffix not in ARTIFACT_KINDS:
        known = ", ".join(f"{s} ({k})" for s, k in ARTIFACT_KINDS.items())
        raise InvalidInputError(f"{output}: cannot tell what to write from its suffix; use {known}")
    return ARTIFACT_KINDS[output.suffix]


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """`write(tmp)` creates a temporary file next to `path` (same suffix: exporters go by it),
    which then replaces `path` in one rename; on any failure `path` is left as it was. The writer
    creates the file itself, so it gets the usual permissions (mkstemp's are owner-only)."""
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sidecar(library: str | os.PathLike) -> Sidecar:
    lib, side = Path(library), sidecar_path(library)
    if not lib.is_file():
        raise InvalidInputError(f"{lib}: no such library")
    if not side.is_file():
        raise InvalidInputError(f"{lib}: no {side.name} beside it, so its inputs are unknown; "
                                "compile it with `hwlat compile`, which writes one")
    try:
        raw = json.loads(side.read_text())
        if raw.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {SIDECAR_FORMAT}")
        raw["inputs"] = tuple(TensorSpec(t["name"], tuple(int(d) for d in t["shape"]), str(t["dtype"]))
                              for t in raw["inputs"])
        raw["outputs"] = tuple(TensorSpec(t["name"], tuple(int(d) for d in t["shape"]), str(t["dtype"]))
                               for t in raw["outputs"])
        meta = Sidecar(**raw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidInputError(f"{side}: not a readable hwlat sidecar ({e}); recompile the model") from e
    if meta.library_sha256 != sha256_of(lib):
        raise InvalidInputError(f"{side} describes another build than {lib.name} (sha256 differs); "
                                "recompile the model")
    return meta
