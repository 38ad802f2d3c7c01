"""What the commands print: rich consoles, number and byte formatting, plots."""

from __future__ import annotations

import shutil

from rich.console import Console

# piped output is not cut to 80 columns: tables stay readable in logs
out = Console(width=shutil.get_terminal_size(fallback=(200, 50)).columns)
err = Console(stderr=True)


def sigs(sigs) -> str:
    return " ".join("x".join(str(d) if d is not None else "?" for d in s.shape) if s.shape is not None
                    else "?" for s in sigs)


def num(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def nbytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def energy(pj: float) -> str:
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if pj >= scale:
            return f"{pj / scale:.3f} {unit}"
    return f"{pj:.3f} pJ"
