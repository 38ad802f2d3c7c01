"""A model's kernels grouped by key, with their cost and totals: what `hwlat inspect` shows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hwlat.graph.cost import Cost, kernel_cost
from hwlat.graph.ir import Graph
from hwlat.graph.kernel import Kernel


@dataclass(frozen=True)
class KernelRow:
    kernel: Kernel  # the first occurrence
    cost: Cost  # of one occurrence
    count: int


@dataclass(frozen=True)
class Summary:
    rows: tuple[KernelRow, ...]
    nodes: int

    def totals(self) -> dict:
        def total(field: str):
            vals = [getattr(r.cost, field) for r in self.rows]
            return None if any(v is None for v in vals) else sum(v * r.count for v, r in zip(vals, self.rows, strict=True))

        by_kind = Counter()
        for r in self.rows:
            by_kind[r.kernel.kind.value] += r.count
        return {
            "kernels": sum(r.count for r in self.rows),
            "unique_kernels": len(self.rows),
            "nodes": self.nodes,
            "macs": total("macs"),
            "params": total("params"),
            "bytes_read": total("bytes_read"),
            "bytes_written": total("bytes_written"),
            "by_kind": dict(sorted(by_kind.items())),
        }

    def to_json(self) -> dict:
        kernels = [
            {
                "kind": r.kernel.kind.value,
                "ops": list(r.kernel.key.ops),
                "rule": r.kernel.rule,
                "inputs": [s.text() for s in r.kernel.key.inputs],
                "outputs": [s.text() for s in r.kernel.key.outputs],
                "params_shapes": [s.text() for s in r.kernel.key.params],
                "macs": r.cost.macs,
                "params": r.cost.params,
                "bytes_read": r.cost.bytes_read,
                "bytes_written": r.cost.bytes_written,
                "count": r.count,
                "key": r.kernel.key.text(),
            }
            for r in self.rows
        ]
        return {"kernels": kernels, "totals": self.totals()}


def summarize(g: Graph, kernels: list[Kernel]) -> Summary:
    first: dict = {}
    counts: Counter = Counter()
    for k in kernels:
        first.setdefault(k.key, k)
        counts[k.key] += 1
    rows = tuple(KernelRow(k, kernel_cost(g, k), counts[key]) for key, k in first.items())
    return Summary(rows=rows, nodes=len(g.nodes))
