"""The plot `hwlat validate --plot` and `hwlat.validate(plot=...)` write: predicted vs measured."""

from __future__ import annotations

import os
from pathlib import Path


def scatter(rows, path: Path, device: str) -> None:
    """Predicted vs measured ms of validated models, each point named by its model, with the
    ±10 % band; written to `path` through a temp file (a crash leaves no half-written PNG)."""
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
