"""Latency-constrained search over any space of `hwlat.nas.SPACES` (OFA MobileNetV3 subnets,
ProxylessNAS mobile archs, NB201 cells): an ask/tell interface, OFA's evolution,
random sampling as the baseline, and `run_search`, which drives any of them against a table.

A searcher proposes archs (`ask`), the driver scores them with an objective and reports the
scores back (`tell`); the latency constraint is the searcher's, checked in batches with
the table's `latency`. No accuracy predictor ships with hwlat, so the default objective is a
proxy: the subnet's MACs (the larger subnet of the space under the same latency), params
breaking ties. Pass any `objective(archs) -> np.ndarray` (higher is better) to search for
something else, such as an accuracy predictor's output. No torch here.
"""

from __future__ import annotations

import math
import numbers
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.nas.space import LatencyTable

__all__ = [
    "Candidate",
    "EvolutionSearch",
    "MacsObjective",
    "Objective",
    "RandomSearch",
    "SearchResult",
    "Searcher",
    "run_search",
    "smallest_subnet",
]

Objective = Callable[[list[dict]], np.ndarray]  # archs -> one score each, higher is better
_TRIES = 100  # proposals per slot before a slot falls back to an arch known to fit the budget


class Searcher(Protocol):
    """What `run_search` drives. `ask(n)` proposes up to n archs (the space's); `tell` gets
    them back with their objective values, in the same order."""

    population_size: int  # archs asked for per generation

    def ask(self, n: int) -> list[dict]: ...

    def tell(self, archs: Sequence[dict], objectives: np.ndarray) -> None: ...


SearcherFactory = Callable[[LatencyTable, float, np.random.Generator], Searcher]


# --- the proxy objective -----------------------------------------------------------------------

class MacsObjective:
    """A subnet's MACs, with params breaking ties: the default objective, a proxy for accuracy
    (hwlat ships no accuracy predictor). The table gives them (`costs`), from its kernel keys."""

    name = "MACs (accuracy proxy: larger subnet under the same latency; params break ties)"

    def __init__(self, table: LatencyTable):
        self.table = table
        # params * _tie < 1: a pure tiebreak
        self._tie = 2.0 ** -math.ceil(math.log2(table.params_bound() + 1))

    def costs(self, enc) -> tuple[np.ndarray, np.ndarray]:
        """(MACs, params) of every encoded arch, int64."""
        return self.table.costs(enc)

    def __call__(self, archs: list) -> np.ndarray:
        macs, params = self.costs(self.table.encode(archs))
        return macs + params * self._tie


# --- the budget ----------------------------------------------------------------------------------

def smallest_subnet(table: LatencyTable) -> tuple[Any, float]:
    """The arch with the lowest latency on the table, and that latency (ms), exact."""
    return table.smallest()


def _check_budget(table: LatencyTable, latency_ms: float) -> tuple[float, Any]:
    """The budget as a float, and the smallest subnet (which fits it)."""
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, numbers.Real) or not (
            math.isfinite(latency_ms) and latency_ms > 0):
        raise InvalidInputError(f"latency budget must be a positive number of ms, got {latency_ms!r}")
    arch, least = smallest_subnet(table)
    if latency_ms < least:
        up = math.ceil(least * 1e4) / 1e4
        raise InvalidInputError(
            f"latency budget {latency_ms:g} ms is below the smallest latency {table.space_title} "
            f"reaches on device '{table.device}': {least:.6g} ms ({table.describe(arch)}); "
            f"raise the budget to at least {up:.4f} ms"
        )
    return float(latency_ms), arch


# --- searchers -----------------------------------------------------------------------------------

class _BudgetedSearch:
    """Shared by the searchers: archs as gene rows (the table's `genes`: for OFA MobileNetV3 20
    kernel indices, 20 expand indices, 5 depth indices, 1 resolution index; one choice index per
    block or edge elsewhere), and proposals kept only when within the latency budget."""

    population_size = 100

    def __init__(self, table: LatencyTable, latency_ms: float,
                 rng: np.random.Generator | int | None = None):
        self.latency_ms, smallest = _check_budget(table, latency_ms)
        self.table = table
        self.rng = np.random.default_rng(rng)
        self._n_choices = np.asarray(table.gene_choices)
        self._smallest = self._genes(table.encode([smallest]))[0]

    def _encoding(self, genes: np.ndarray):
        return self.table.from_genes(genes)

    def _genes(self, enc) -> np.ndarray:
        return self.table.genes(enc)

    def _fits(self, genes: np.ndarray) -> np.ndarray:
        return self.table.latency(self._encoding(genes)) <= self.latency_ms

    def _draw(self, n: int) -> np.ndarray:
        """n random gene rows, every field uniform and independent (OFA's sample_active_subnet)."""
        return self.rng.integers(0, self._n_choices, size=(n, len(self._n_choices)))

    def _fill(self, propose: Callable[[np.ndarray], np.ndarray], fallback: np.ndarray) -> np.ndarray:
        """One row per slot of `fallback`: propose(slots) retried for the slots whose proposal
        exceeds the budget (as OFA retries until one fits); after _TRIES, the fallback row,
        which fits."""
        genes, todo = fallback.copy(), np.arange(len(fallback))
        for _ in range(_TRIES):
            if not len(todo):
                break
            proposed = propose(todo)
            ok = self._fits(proposed)
            genes[todo[ok]] = proposed[ok]
            todo = todo[~ok]
        return genes

    def _random(self, n: int) -> np.ndarray:
        """n random archs within the budget; where the budget is so tight that none turns up,
        the smallest subnet."""
        return self._fill(lambda slots: self._draw(len(slots)), np.tile(self._smallest, (n, 1)))

    def _archs(self, genes: np.ndarray) -> list:
        return self.table.decode(self._encoding(genes))


class RandomSearch(_BudgetedSearch):
    """The baseline: every ask draws fresh random archs within the budget; tell is ignored."""

    def ask(self, n: int) -> list[dict]:
        return self._archs(self._random(n))

    def tell(self, archs: Sequence[dict], objectives: np.ndarray) -> None:
        pass


class EvolutionSearch(_BudgetedSearch):
    """OFA's EvolutionFinder (`ofa/nas/search_algorithm/evolution.py`) as ask/tell: the first ask
    is a random population within the budget; every later ask returns `mutation_ratio` of n as
    mutants of random parents (each field redrawn with probability `mutate_prob`) and the rest as
    uniform crossovers of two parents; tell keeps the best `parent_ratio` of the population as
    the parents. A child over the budget is redrawn from the same parents, as OFA does, up to
    100 times; then it is a copy of its (first) parent, which fits."""

    def __init__(self, table: LatencyTable, latency_ms: float,
                 rng: np.random.Generator | int | None = None, *, population_size: int = 100,
                 parent_ratio: float = 0.25, mutation_ratio: float = 0.5,
                 mutate_prob: float = 0.1):
        for name, value in (("parent_ratio", parent_ratio), ("mutation_ratio", mutation_ratio),
                            ("mutate_prob", mutate_prob)):
            if not 0 <= value <= 1:
                raise InvalidInputError(f"{name} must be in [0, 1], got {value!r}")
        self.population_size = _positive_int("population_size", population_size)
        super().__init__(table, latency_ms, rng)
        self.parent_ratio, self.mutation_ratio, self.mutate_prob = (
            parent_ratio, mutation_ratio, mutate_prob)
        self.n_parents = max(1, round(parent_ratio * self.population_size))
        self._parents = np.zeros((0, len(self._n_choices)), dtype=np.int64)
        self._scores = np.zeros(0)

    def ask(self, n: int) -> list[dict]:
        if not len(self._parents):
            return self._archs(self._random(n))
        n_mut = round(self.mutation_ratio * n)
        return self._archs(np.vstack([self._mutants(n_mut), self._crossovers(n - n_mut)]))

    def tell(self, archs: Sequence[dict], objectives: np.ndarray) -> None:
        genes = self._genes(self.table.encode(archs))
        scores = np.asarray(objectives, dtype=float)
        keep = self._fits(genes)  # an arch told from elsewhere may not fit; it must not breed
        genes = np.vstack([self._parents, genes[keep]])
        scores = np.concatenate([self._scores, scores[keep]])
        best = np.argsort(-scores, kind="stable")[: self.n_parents]
        self._parents, self._scores = genes[best], scores[best]

    def _pick(self, n: int) -> np.ndarray:
        return self._parents[self.rng.integers(len(self._parents), size=n)]

    def _mutants(self, n: int) -> np.ndarray:
        parents = self._pick(n)

        def propose(slots):
            redraw = self.rng.random((len(slots), parents.shape[1])) < self.mutate_prob
            return np.where(redraw, self._draw(len(slots)), parents[slots])

        return self._fill(propose, parents)

    def _crossovers(self, n: int) -> np.ndarray:
        a, b = self._pick(n), self._pick(n)

        def propose(slots):
            return np.where(self.rng.random((len(slots), a.shape[1])) < 0.5, a[slots], b[slots])

        return self._fill(propose, a)


# --- the driver ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    arch: dict
    latency_ms: float
    objective: float
    macs: int
    params: int

    def to_json(self) -> dict:
        return {"arch": self.arch, "latency_ms": self.latency_ms, "objective": self.objective,
                "macs": self.macs, "params": self.params}


@dataclass(frozen=True)
class SearchResult:
    space: str  # the registry name of the space searched
    device: str
    width_mult: float | None  # OFA MobileNetV3's supernet width; None in the other spaces
    latency_budget_ms: float
    objective: str  # what was maximized
    front: tuple[Candidate, ...]  # Pareto front of everything evaluated, latency ascending
    evaluated: int  # archs scored by the objective
    generations: int
    seed: int
    wall_s: float
    progress: tuple[float, ...]  # best objective within the budget after each generation

    @property
    def best(self) -> Candidate:
        """The highest objective within the budget (the lowest latency among equals)."""
        return self.front[-1]

    def to_json(self) -> dict:
        return {
            "space": self.space,
            **({} if self.width_mult is None else {"width_mult": self.width_mult}),
            "device": self.device,
            "latency_budget_ms": self.latency_budget_ms,
            "objective": self.objective,
            "generations": self.generations,
            "seed": self.seed,
            "evaluated": self.evaluated,
            "wall_s": self.wall_s,
            "best": self.best.to_json(),
            "front": [c.to_json() for c in self.front],
            "progress": [p if math.isfinite(p) else None for p in self.progress],
        }


def run_search(table: LatencyTable, latency_ms: float, generations: int, seed: int,
               objective: Objective | None = None, *,
               searcher: SearcherFactory = EvolutionSearch) -> SearchResult:
    """Search the table's space for archs within `latency_ms`, maximizing `objective` (default:
    MacsObjective, a MACs proxy for accuracy). `searcher(table, latency_ms, rng)` makes the
    searcher (EvolutionSearch, RandomSearch or your own); it is asked for `population_size` archs
    for the initial population and then once per generation, so `evaluated` is
    population_size * (generations + 1), as with OFA's max_time_budget generations."""
    start = time.perf_counter()
    latency_ms = _check_budget(table, latency_ms)[0]
    generations = _positive_int("generations", generations)
    costs = MacsObjective(table)
    objective = costs if objective is None else objective
    search = searcher(table, latency_ms, np.random.default_rng(seed))
    encs, latencies, scores, progress = [], [], [], []
    best, evaluated = -math.inf, 0
    for _ in range(generations + 1):
        archs = search.ask(search.population_size)
        evaluated += len(archs)
        enc = table.encode(archs)
        values = np.asarray(objective(archs), dtype=float)
        if values.shape != (len(archs),) or not np.isfinite(values).all():
            raise InvalidInputError(
                f"objective {_name(objective)} must return one finite number per arch: got "
                f"shape {values.shape} for {len(archs)} archs"
                + ("" if values.shape != (len(archs),) else ", with NaN or infinity")
            )
        search.tell(archs, values)
        lat = table.latency(enc)
        fits = lat <= latency_ms  # a searcher of your own may overshoot; those never count
        encs.append(table.take(enc, fits))
        latencies.append(lat[fits])
        scores.append(values[fits])
        if fits.any():
            best = max(best, float(values[fits].max()))
        progress.append(best)
    lat, score = np.concatenate(latencies), np.concatenate(scores)
    if not len(lat):
        raise InvalidInputError(f"searcher {_name(searcher)} proposed no arch within "
                                f"{latency_ms:g} ms")
    # Pareto front: by latency ascending (higher objective first among equal latencies), keep
    # each point whose objective beats every faster point's
    order = np.lexsort((-score, lat))
    seen = np.maximum.accumulate(score[order])
    front = order[score[order] > np.concatenate([[-np.inf], seen[:-1]])]
    enc = table.take(table.concat(encs), front)
    macs, params = costs.costs(enc)
    points = tuple(Candidate(a, float(lat[i]), float(score[i]), int(m), int(p)) for a, i, m, p in
                   zip(table.decode(enc), front, macs, params, strict=True))
    return SearchResult(table.space_name, table.device, getattr(table.space, "width_mult", None),
                        latency_ms, _name(objective),
                        points, evaluated, generations, seed, time.perf_counter() - start,
                        tuple(progress))


def _name(thing: object) -> str:
    return getattr(thing, "name", None) or getattr(thing, "__name__", type(thing).__name__)


def _positive_int(name: str, value: object) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if n is None or isinstance(value, bool) or n <= 0:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return n
