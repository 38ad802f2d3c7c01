"""Latency-constrained search on a synthetic table whose latencies grow with the kernels' MACs:
the ask/tell interface, the budget, the MACs proxy objective, the Pareto front, OFA's evolution
against random sampling."""

from __future__ import annotations

import functools
import hashlib
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.lut import Entry, TableStore
from hwlat.nas import OFA_MBV3
from hwlat.nas.ofa_lut import (
    OfaLatencyTable,
    block_kernels,
    fixed_kernels,
    key_cost,
    ofa_mbv3_kernels,
)
from hwlat.nas.search import (
    EvolutionSearch,
    MacsObjective,
    RandomSearch,
    run_search,
    smallest_subnet,
)

DEVICE = "synthetic"
AT = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
RESOLUTIONS = (128, 160, 192, 224)


def synthetic_ms(key) -> float:
    """1 us per kernel plus 10 ms per GMAC, scaled by a factor in [0.75, 1.25) drawn from the
    key's hash: latency grows with size without being a function of MACs alone."""
    u = int(hashlib.blake2b(key.text().encode(), digest_size=2).hexdigest(), 16) / 2**16
    return 1e-3 + key_cost(key).macs * 1e-8 * (0.75 + 0.5 * u)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    keys = {k for r in RESOLUTIONS for k in fixed_kernels(r)} | {
        k for r in RESOLUTIONS for j in range(OFA_MBV3.n_blocks)
        for ks in OFA_MBV3.kernel_sizes for e in OFA_MBV3.expand_ratios
        for k in block_kernels(r, j, ks, e)
    }
    entries = [Entry(DEVICE, k.text(), k.kind.value, ms, ms, ms, 0.0, 1, 1, "synthetic", "{}",
                     "synthetic", AT) for k in keys for ms in [synthetic_ms(k)]]
    with TableStore(tmp_path_factory.mktemp("lut") / "t.sqlite") as store:
        store.put_many(entries)
        return OfaLatencyTable(store, DEVICE, resolutions=RESOLUTIONS)


@pytest.fixture(scope="module")
def budget(table):
    """The 20th percentile of random subnets' latencies: tight enough that most draws miss."""
    return float(np.quantile(table.latency(table.sample(20_000, rng=0)), 0.2))


def fits(table, arch, budget) -> bool:
    # latency_one sums in another order than the batched query: allow for rounding
    return table.latency_one(arch) <= budget * (1 + 1e-12)


def test_ask_tell_round_trip(table, budget):
    """A trivial searcher (random archs, blind to the budget) driven by run_search: every ask is
    scored and told back in order, and the front covers every told arch within the budget."""
    made = []

    class Blind:
        population_size = 16

        def __init__(self, table, latency_ms, rng):
            self.table, self.rng, self.asked, self.told = table, rng, [], []
            made.append(self)

        def ask(self, n):
            self.asked.append(self.table.decode(self.table.sample(n, self.rng)))
            return self.asked[-1]

        def tell(self, archs, objectives):
            self.told.append((archs, objectives))

    result = run_search(table, budget, 3, seed=5, searcher=Blind)
    (blind,) = made
    assert result.evaluated == 16 * 4 == sum(len(a) for a, _ in blind.told)
    objective = MacsObjective(table)
    points = []
    for asked, (archs, values) in zip(blind.asked, blind.told, strict=True):
        assert archs is asked and values.shape == (16,)
        np.testing.assert_array_equal(values, objective(archs))
        points += [(table.latency_one(a), v) for a, v in zip(archs, values, strict=True)
                   if fits(table, a, budget)]
    assert points, "no random arch within the budget: the test says nothing"
    front = [(c.latency_ms, c.objective) for c in result.front]
    assert all(any(f == pytest.approx(p, rel=1e-12) for p in points) for f in front)
    for lat, value in points:
        assert any(fl <= lat * (1 + 1e-12) and fv >= value for fl, fv in front)


def test_smallest_subnet_is_the_floor(table):
    arch, least = smallest_subnet(table)
    assert OFA_MBV3.validate(arch) == arch
    assert table.latency_one(arch) == pytest.approx(least, rel=1e-12)
    assert least < table.latency(table.sample(50_000, rng=1)).min()
    # a budget of exactly the floor is allowed: the search can only return the floor's latency
    result = run_search(table, least, 2, seed=0)
    assert all(fits(table, c.arch, least) for c in result.front)


def test_evolution_asks_only_valid_archs_within_budget(table, budget):
    search = EvolutionSearch(table, budget, rng=3)
    objective = MacsObjective(table)
    for _ in range(6):
        archs = search.ask(search.population_size)
        assert len(archs) == 100
        assert all(OFA_MBV3.validate(a) == a for a in archs)
        assert all(fits(table, a, budget) for a in archs)
        search.tell(archs, objective(archs))


def test_search_result(table, budget):
    result = run_search(table, budget, 20, seed=0)
    assert result.evaluated == 100 * 21 and len(result.progress) == 21
    assert list(result.progress) == sorted(result.progress)
    assert result.best is result.front[-1] and result.best.objective == result.progress[-1]
    assert "proxy" in result.objective and result.wall_s > 0
    for c in result.front:
        assert OFA_MBV3.validate(c.arch) == c.arch
        assert fits(table, c.arch, budget)
        assert table.latency_one(c.arch) == pytest.approx(c.latency_ms, rel=1e-12)
        costs = [key_cost(k) for k in ofa_mbv3_kernels(c.arch)]
        assert c.macs == sum(x.macs for x in costs) and c.params == sum(x.params for x in costs)
        assert math.floor(c.objective) == c.macs  # params only break ties
    doc = result.to_json()
    assert doc["best"]["arch"] == result.best.arch and doc["evaluated"] == 2100
    assert len(doc["front"]) == len(result.front) and doc["latency_budget_ms"] == budget


def test_front_is_non_dominated(table, budget):
    front = run_search(table, budget, 10, seed=1).front
    assert len(front) > 3
    for a in front:
        for b in front:
            if a is not b:
                assert not (a.latency_ms <= b.latency_ms and a.objective >= b.objective), (a, b)
    assert [c.latency_ms for c in front] == sorted(c.latency_ms for c in front)


# OFA's evolution against random sampling, each given 100 x 31 evaluations, on 8 seeds: the
# evolution's best MACs under the budget beat random's on at least 6 seeds and by at least 2 % on
# average. Seen on this table: better on 7 of 8 seeds, by 3.2 % on average (0.2 % to 6.8 %); on
# seed 7 the evolution locks onto resolution 128 (moving off it costs more latency than one
# mutation frees) while random sampling finds a larger net at 160, and loses by 4.8 %.
SEEDS, MIN_WINS, MIN_MEAN_GAIN = range(8), 6, 0.02


def test_evolution_beats_random_sampling(table, budget):
    ratios = []
    for seed in SEEDS:
        evo = run_search(table, budget, 30, seed)
        rnd = run_search(table, budget, 30, seed, searcher=RandomSearch)
        assert evo.evaluated == rnd.evaluated == 3100
        ratios.append(evo.best.macs / rnd.best.macs)
    assert sum(r > 1 for r in ratios) >= MIN_WINS, ratios
    assert np.mean(ratios) >= 1 + MIN_MEAN_GAIN, ratios


def test_objective_is_pluggable(table, budget):
    def resolution(archs):
        return np.array([a["r"] for a in archs], dtype=float)

    result = run_search(table, budget, 3, seed=0, objective=resolution)
    assert result.objective == "resolution"
    assert result.best.objective == result.best.arch["r"]
    small = functools.partial(EvolutionSearch, population_size=10)
    assert run_search(table, budget, 2, seed=0, searcher=small).evaluated == 30
    with pytest.raises(InvalidInputError, match=r"one finite number per arch: got shape \(1,\)"):
        run_search(table, budget, 1, seed=0, objective=lambda archs: np.zeros(1))


def test_bad_budgets_and_generations(table):
    _, least = smallest_subnet(table)
    up = math.ceil(least * 1e4) / 1e4
    with pytest.raises(InvalidInputError) as e:
        run_search(table, least * 0.9, 10, seed=0)
    msg = str(e.value)
    assert f"smallest latency OFA MobileNetV3 reaches on device '{DEVICE}': {least:.6g} ms" in msg
    assert f"at least {up:.4f} ms" in msg
    with pytest.raises(InvalidInputError, match="below the smallest latency"):
        EvolutionSearch(table, least * 0.5)
    for bad in (0, -1.0, math.nan, math.inf, "10", True):
        with pytest.raises(InvalidInputError, match="latency budget must be a positive number"):
            run_search(table, bad, 10, seed=0)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidInputError, match="generations must be a positive integer"):
            run_search(table, 1e3, bad, seed=0)
    with pytest.raises(InvalidInputError, match="mutate_prob must be in"):
        EvolutionSearch(table, 1e3, mutate_prob=1.5)


def test_cli_search_prints_a_front_within_budget(tmp_path, hwlat_cli):
    import json

    keys = {k for r in OFA_MBV3.resolutions for k in fixed_kernels(r)} | {
        k for r in OFA_MBV3.resolutions for j in range(OFA_MBV3.n_blocks)
        for ks in OFA_MBV3.kernel_sizes for e in OFA_MBV3.expand_ratios
        for k in block_kernels(r, j, ks, e)
    }
    path = tmp_path / "t.sqlite"
    with TableStore(path) as store:
        store.put_many([Entry(DEVICE, k.text(), k.kind.value, ms, ms, ms, 0.0, 1, 1, "synthetic", "{}",
                              "synthetic", AT) for k in keys for ms in [synthetic_ms(k)]])
        floor = smallest_subnet(OfaLatencyTable(store, DEVICE))[1]
    run = lambda *a: hwlat_cli("search", "--device", DEVICE, "--table", path, *a)  # noqa: E731
    r = run("--latency-ms", str(floor * 2), "--generations", "3", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["front"] and all(c["latency_ms"] <= floor * 2 for c in result["front"])
    r = run("--latency-ms", str(floor / 2))
    assert r.returncode == 2 and r.stderr.startswith("error: latency budget") and "Traceback" not in r.stderr


@pytest.mark.parametrize("space", ["nb201", "proxyless-mobile"])
def test_cli_search_runs_in_the_space_asked_for(tmp_path, space):
    """`hwlat search --space S` builds S's table and searches S: the JSON names the space and its
    archs are S's (cell strings, or {"ops", "r"}), each within the budget by S's own table."""
    import json
    import os
    import subprocess
    import sys

    from hwlat.nas import get_space
    from hwlat.nas import proxyless as px
    from hwlat.nas.nb201_lut import nb201_all_keys

    if space == "nb201":
        keys = set(nb201_all_keys().values())
    else:
        keys = set(px.fixed_kernels(224)) | {k for j in range(px.PROXYLESS_MOBILE.n_blocks)
                                             for op in px.PROXYLESS_MOBILE.choices
                                             for k in px.block_kernels(224, j, op)}
    path = tmp_path / "t.sqlite"
    with TableStore(path) as store:
        store.put_many([Entry(DEVICE, k.text(), k.kind.value, ms, ms, ms, 0.0, 1, 1, "synthetic",
                              "{}", "synthetic", AT) for k in keys for ms in [synthetic_ms(k)]])
        lut = get_space(space).table(store, DEVICE)
        floor = lut.smallest()[1]
        budget = floor + 0.5 * (lut.latency(lut.sample(200, rng=0)).mean() - floor)
        env = dict(os.environ, HWLAT_HOME=str(tmp_path))
        r = subprocess.run([sys.executable, "-m", "hwlat.cli", "search", "--space", space,
                            "--device", DEVICE, "--table", str(path), "--latency-ms", str(budget),
                            "--generations", "2", "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["space"] == space and "width_mult" not in result
        archs = [c["arch"] for c in result["front"]]
        assert archs and all(get_space(space).validate(a) == a for a in archs)
        assert all(isinstance(a, str) == (space == "nb201") for a in archs)
        for c in result["front"]:
            assert c["latency_ms"] == pytest.approx(lut.latency_one(c["arch"]), rel=1e-12)
            assert c["latency_ms"] <= budget
        assert result["evaluated"] == 300
        text = subprocess.run([sys.executable, "-m", "hwlat.cli", "search", "--space", space,
                               "--device", DEVICE, "--table", str(path), "--latency-ms",
                               str(budget), "--generations", "1"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert text.returncode == 0 and f"{space}: Pareto front" in text.stdout, text.stderr
        low = subprocess.run([sys.executable, "-m", "hwlat.cli", "search", "--space", space,
                              "--device", DEVICE, "--table", str(path), "--latency-ms",
                              str(floor / 2)], capture_output=True, text=True, env=env, timeout=300)
        assert low.returncode == 2 and low.stderr.startswith("error: latency budget")
        assert "Traceback" not in low.stderr
