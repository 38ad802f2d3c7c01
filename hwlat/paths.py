"""Where hwlat keeps its files (a leaf: every layer may import it without importing the package
root, whose lazy facade reaches every layer)."""

from __future__ import annotations

import os
from pathlib import Path

from hwlat.errors import InvalidInputError


def home() -> Path:
    """Where hwlat keeps its tables and tuning databases: $HWLAT_HOME, else ~/.cache/hwlat."""
    return Path(os.environ.get("HWLAT_HOME") or "~/.cache/hwlat").expanduser()


def home_folder(name: str) -> Path:
    """home() / name, created if missing; a folder that cannot be created is one InvalidInputError."""
    folder = home() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(f"cannot create {folder} (set HWLAT_HOME to a writable folder): "
                                f"{e.strerror or e}") from e
    return folder
