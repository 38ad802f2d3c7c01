"""What the commands print: rich consoles, number and byte formatting, plots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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



def scatter(rows, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [r["measured_ms"] for r in rows]
    p = [r["predicted_ms"] for r in rows]
    hi = max(m + p) * 1.1
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.fill_between([0, hi], [0, hi * 0.9], [0, hi * 1.1], color="tab:green", alpha=0.15, label="±10 %")
    ax.plot([0, hi], [0, hi], color="gray", lw=1)
    ax.scatter(m, p, s=18)
    for r in rows:  # each point named by its model
        ax.annotate(Path(r["model"]).stem, (r["measured_ms"], r["predicted_ms"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="measured (ms)", ylabel="predicted (ms)", title=f"hwlat predict vs measured, {device}",
           xlim=(0, hi), ylim=(0, hi))
    ax.legend(loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
