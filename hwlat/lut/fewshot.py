"""Few-shot tables: a new device's per-kernel latencies from a handful of whole-model measurements.

Profiling every kernel on a phone is slow and often impossible; timing ten whole models is not.
Given N models measured end to end on the new device and a reference device's per-kernel table
(this machine's cpu-ort, say), the new device's table is the reference reshaped by a few numbers:

    new_ms(k) = (s + e[group(k)] + d[k]) * ref_ms(k) + c + mu * MACs(k) + beta * bytes(k)
    model_ms  = sum of new_ms over the model's kernels + overhead

`s` (one scale) and `overhead` are free; `e` lets each kernel group (its kind by default: conv,
pool, elementwise...) scale differently, `c` is a fixed cost per kernel launched, `mu` and `beta`
a cost per multiply-accumulate and per byte moved, and `d` lets each kernel key depart from its
group. All are linear in the measurements, fitted on relative error (every model counts the
same, whatever its latency) by ridge regression that pulls `e`, `c`, `mu`, `beta` and `d` towards
zero, i.e. towards "the same ratios as the reference". The three penalty strengths (group
scales, work terms, per-key departures) are each a noise variance over a prior variance, and are
picked from a grid by the evidence (restricted marginal likelihood): data that a term explains
exactly drive its penalty to zero, noisy data keep the fit near the reference, and every term
the data do not need costs its log-determinant. So ten models fit two free numbers plus what
they support, a hundred can afford per-key corrections, and a device that is exactly a
rescaled reference is recovered exactly. The overhead is kept >= 0 (a negative one is fitted
again at zero), fitted latencies below zero are set to zero, and the table is finally scaled so
that the measured models' median ratio measured / predicted is 1.

Cross-validation (leave-one-out or its generalised form) picked worse penalties on NB201's
Pixel 3 measurements: with ten heavy-tailed relative errors it often chose per-key terms that
fitted the noise.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.lut.store import Entry, TableStore
from hwlat.version import __version__

__all__ = [
    "MIN_MODELS",
    "OVERHEAD_KEY",
    "FewShotFit",
    "fewshot_entries",
    "fit_device_table",
    "fit_fewshot",
    "fit_fewshot_model",
    "predict_fewshot",
    "read_measurements",
    "reference_from_store",
]

OVERHEAD_KEY = "model-overhead"  # pseudo-kernel: the fixed cost of one model run
OVERHEAD_KIND = "overhead"
MIN_MODELS = 2  # the scale and the overhead are always fitted
# penalty strengths tried for each of: group scales, work terms, per-key departures; inf drops them
_GRID = (1e-9, 1e-4, 1e-2, 1.0, 1e2, math.inf)
_SHOWN = 1  # offending keys quoted per error (the rest counted)


@dataclass(frozen=True)
class FewShotFit:
    table: dict[str, float]  # kernel key -> ms on the new device, and OVERHEAD_KEY -> ms
    scale: float  # s: new ms per reference ms, before group and key corrections
    group_scale: dict[str, float]  # s + e[group]
    per_kernel_ms: float  # c
    per_gmac_ms: float  # mu, per 1e9 MACs
    per_mb_ms: float  # beta, per 1e6 bytes moved
    penalties: tuple[float, float, float]  # (group scales, work terms, per key), by evidence
    cv_error: float  # median absolute leave-one-out relative error of the chosen penalties
    n_models: int
    clipped: int  # keys whose fitted latency came out negative and was set to 0
    median_ratio: float  # the last step's factor: measured / predicted, median over the models

    def penalty_words(self) -> str:
        """The chosen penalties in words: a dropped term (an infinite penalty) says "off"."""
        return ", ".join(f"{name} {'off' if math.isinf(p) else f'{p:g}'}" for name, p in
                         zip(("group scales", "work terms", "per key"), self.penalties, strict=True))

    def describe(self) -> str:
        groups = ", ".join(f"{g} x{v:.3g}" for g, v in sorted(self.group_scale.items()))
        return (f"{groups}; {self.per_kernel_ms * 1e3:+.2f} us/kernel, "
                f"{self.per_gmac_ms:+.3g} ms/GMAC, {self.per_mb_ms:+.3g} ms/MB, overhead "
                f"{self.table[OVERHEAD_KEY]:.4f} ms; penalties {self.penalty_words()}; cross-validated "
                f"error {self.cv_error:.1%} (median, leave-one-out) on {self.n_models} models")


def fit_fewshot(arch_kernels: Mapping[str, list[str]], measurements: Mapping[str, float],
                reference: Mapping[str, float], features: Mapping[str, tuple[float, float]],
                groups: Mapping[str, str] | None = None) -> dict[str, float]:
    """The new device's table: every reference key -> fitted ms, plus OVERHEAD_KEY -> ms.

    `arch_kernels` maps each measured model (and any others) to its kernel keys, a key once per
    occurrence; `measurements` model -> ms measured on the new device; `reference` key -> ms on
    the reference device; `features` key -> (MACs, bytes moved); `groups` key -> group name
    (default: the key's kind, the text before its first '|')."""
    return fit_fewshot_model(arch_kernels, measurements, reference, features, groups).table


def predict_fewshot(table: Mapping[str, float], kernels: Iterable[str]) -> float:
    """A model's latency from a fitted table: its kernels' ms summed, plus the overhead."""
    total = table.get(OVERHEAD_KEY, 0.0)
    for k in kernels:
        try:
            total += table[k]
        except KeyError:
            raise InvalidInputError(
                f"kernel key {k!r} is not in the fitted table; fit with a reference table that "
                "covers the model's kernels"
            ) from None
    return total


def fit_fewshot_model(arch_kernels: Mapping[str, list[str]], measurements: Mapping[str, float],
                      reference: Mapping[str, float], features: Mapping[str, tuple[float, float]],
                      groups: Mapping[str, str] | None = None, *,
                      penalties: tuple[float, float, float] | None = None) -> FewShotFit:
    """`fit_fewshot` with what was fitted: the scales, work terms, penalties and the leave-one-out
    error. `penalties` (group scales, work terms, per-key departures; > 0, inf drops a term)
    skips the search."""
    archs, y = _check(arch_kernels, measurements, reference, features)
    if penalties is not None and (len(penalties) != 3 or not all(v > 0 for v in penalties)):
        raise InvalidInputError(
            f"penalties {penalties!r}: need three numbers > 0 (group scales, work terms, per key; "
            "inf drops a term)"
        )
    keys = sorted(reference)
    col = {k: j for j, k in enumerate(keys)}
    counts = np.zeros((len(archs), len(keys)))
    for i, a in enumerate(archs):
        for k in arch_kernels[a]:
            counts[i, col[k]] += 1
    ref = np.array([float(reference[k]) for k in keys])
    work = np.array([[1.0, features[k][0] / 1e9, features[k][1] / 1e6] for k in keys])
    group_of = [(groups or {}).get(k) or k.partition("|")[0] for k in keys]
    names = sorted(set(group_of))
    onehot = np.array([[g == n for n in names] for g in group_of], dtype=float).reshape(len(keys), -1)

    # per model: [overhead, s, e (G), c, mu, beta, d (K)] times what each multiplies
    ref_ms = counts * ref  # [models, keys]: ms each key contributes on the reference
    x = np.hstack([np.ones((len(archs), 1)), ref_ms.sum(axis=1, keepdims=True), ref_ms @ onehot,
                   counts @ work, ref_ms])
    n_groups = len(names)
    blocks = np.repeat([0, 1, 2], [n_groups, 3, len(keys)])  # penalty of each penalised column
    rows = x / y[:, None]  # relative error: every model counts alike, whatever its latency
    fit = _Fit(rows, n_free=2, blocks=blocks)
    if penalties is None:
        penalties = _select(fit, list(itertools.product(_GRID, repeat=3)))
    penalties = tuple(float(v) for v in penalties)
    theta = fit.theta(penalties)
    if theta[0] < 0:  # a negative overhead: fitted again at zero
        fit = _Fit(rows[:, 1:], n_free=1, blocks=blocks)
        theta = np.concatenate([[0.0], fit.theta(penalties)])
    score = float(np.median(np.abs(fit.loo(penalties))))
    overhead, s = theta[0], theta[1]
    e, w, d = theta[2:2 + n_groups], theta[2 + n_groups:5 + n_groups], theta[5 + n_groups:]
    ms = ref * (s + onehot @ e + d) + work @ w
    clipped = int(np.sum(ms < 0))
    ms = np.maximum(ms, 0.0)
    # Least squares on relative error predicts low when the errors are heavy-tailed (an
    # over-prediction can cost any amount, an under-prediction at most 100 %): one factor puts the
    # measured models' median ratio at 1, which is what "within +-10 %" counts.
    pred = counts @ ms + overhead
    ok = pred > 0
    median_ratio = float(np.exp(np.median(np.log(y[ok] / pred[ok])))) if ok.any() else 1.0
    table = dict(zip(keys, (ms * median_ratio).tolist(), strict=True))
    table[OVERHEAD_KEY] = float(overhead) * median_ratio
    c, mu, beta = w * median_ratio
    return FewShotFit(
        table=table, scale=float(s * median_ratio),
        group_scale={n: float((s + v) * median_ratio) for n, v in zip(names, e, strict=True)},
        per_kernel_ms=float(c), per_gmac_ms=float(mu), per_mb_ms=float(beta),
        penalties=penalties, cv_error=score, n_models=len(archs), clipped=clipped,
        median_ratio=median_ratio,
    )


def _log(lam: float) -> float:
    return 40.0 if math.isinf(lam) else math.log10(lam)


def _select(fit: _Fit, candidates: list[tuple[float, ...]]) -> tuple[float, ...]:
    """The penalties of greatest evidence (restricted marginal likelihood): each penalty is the
    noise variance over a prior variance, so exact data drive the penalties of the terms they
    need towards zero, and noisy data keep them near the reference; the log-determinant charges
    for every term the data do not need."""
    scores = {lams: fit.neg_evidence(lams) for lams in candidates}
    best = min(scores.values())
    # within 2 units of -2 log evidence (a Bayes factor under e, "not worth more than a bare
    # mention"): the simpler model
    return max((lams for lams in candidates if scores[lams] <= best + 2.0),
               key=lambda lams: (sum(map(_log, lams)), -scores[lams]))


class _Fit:
    """Ridge regression of `rows @ theta ~ 1`: the first `n_free` columns unpenalised, the others
    penalised by lams[blocks[j]] * rms_j^2 * theta_j^2 (standardised, so penalties are unit-free;
    inf drops a column). Solved in the models' space: with the free columns projected out the
    fit is (K + I)^-1 for K = sum over blocks of Gram / lam, an N x N eigenproblem however many
    kernel keys there are."""

    def __init__(self, rows: np.ndarray, n_free: int, blocks: np.ndarray):
        self.rows, self.n_free, self.blocks = rows, n_free, blocks
        rms = np.sqrt(np.mean(rows[:, n_free:] ** 2, axis=0))
        rms[rms == 0] = 1.0  # a term no measured model exercises: any penalty keeps it at 0
        self.rms = rms
        u, sv, _ = np.linalg.svd(rows[:, :n_free], full_matrices=False)
        self.q = u[:, sv > sv[0] * 1e-12]  # the free columns' span
        ones = np.ones(len(rows))
        self.target = ones - self.q @ (self.q.T @ ones)
        pen = rows[:, n_free:]
        self.z = (pen - self.q @ (self.q.T @ pen)) / rms
        self.grams = [self.z[:, blocks == b] @ self.z[:, blocks == b].T for b in range(3)]
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _eig(self, lams) -> tuple[np.ndarray, np.ndarray]:
        if lams not in self._cache:
            k = sum((g / lam for g, lam in zip(self.grams, lams, strict=True) if math.isfinite(lam)),
                    np.zeros((len(self.rows), len(self.rows))))
            e, v = np.linalg.eigh(k)
            self._cache[lams] = (np.maximum(e, 0.0), v)
        return self._cache[lams]

    def _resid(self, lams) -> np.ndarray:
        e, v = self._eig(lams)
        return v @ ((v.T @ self.target) / (e + 1.0))  # (K + I)^-1 target: the residual

    def neg_evidence(self, lams) -> float:
        """-2 log restricted marginal likelihood (up to a constant), the noise variance profiled
        out: n log(residual energy / n) + log det(K + I), n the models less the free columns."""
        n = len(self.rows) - self.q.shape[1]
        if n < 1:
            return 0.0  # nothing to tell the penalties apart: all tie, the simplest wins
        e, _ = self._eig(lams)
        energy = max(float(self.target @ self._resid(lams)), 1e-300)
        return n * math.log(energy / n) + float(np.sum(np.log1p(e)))

    def loo(self, lams) -> np.ndarray:
        """Each model's leave-one-out relative error (closed form for ridge); inf where the model
        alone determines a parameter."""
        e, v = self._eig(lams)
        lev = np.sum(self.q**2, axis=1) + (v**2) @ (e / (e + 1.0))
        with np.errstate(divide="ignore"):
            return np.where(1.0 - lev > 1e-13, self._resid(lams) / (1.0 - lev), np.inf)

    def theta(self, lams) -> np.ndarray:
        resid = self._resid(lams)
        lam = np.array([lams[b] for b in self.blocks])
        theta_pen = np.where(np.isfinite(lam), (self.z.T @ resid) / (lam * self.rms), 0.0)
        rest = 1.0 - self.rows[:, self.n_free:] @ theta_pen
        theta_free, *_ = np.linalg.lstsq(self.rows[:, :self.n_free], rest, rcond=None)
        return np.concatenate([theta_free, theta_pen])


def _check(arch_kernels, measurements, reference, features) -> tuple[list[str], np.ndarray]:
    if len(measurements) < MIN_MODELS:
        raise InvalidInputError(
            f"a few-shot fit needs at least {MIN_MODELS} measured models (the scale and the "
            f"overhead are always fitted), got {len(measurements)}"
        )
    archs = list(measurements)
    y = []
    for a in archs:
        ms = measurements[a]
        ok = isinstance(ms, int | float) and not isinstance(ms, bool) and math.isfinite(ms) and ms > 0
        if not ok:
            raise InvalidInputError(
                f"measured latency of {a!r} is {ms!r}; it must be a positive number of ms"
            )
        if a not in arch_kernels:
            raise InvalidInputError(
                f"measured model {a!r} has no kernel list; pass its kernels in arch_kernels"
            )
        y.append(float(ms))
    for k, ms in reference.items():
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not (math.isfinite(ms) and ms >= 0):
            raise InvalidInputError(f"reference latency of {k!r} is {ms!r}; need a number >= 0")
    used = dict.fromkeys(k for a in arch_kernels for k in arch_kernels[a])
    _missing("the reference table lacks", [k for k in used if k not in reference],
             "profile models that contain them on the reference device")
    _missing("no (MACs, bytes) features for", [k for k in reference if k not in features],
             "pass the reference table's kernel features (TableStore.features())")
    return archs, np.array(y)


def _missing(what: str, keys: list[str], way_out: str) -> None:
    if keys:
        shown = ", ".join(repr(k) for k in keys[:_SHOWN])
        more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
        raise InvalidInputError(f"{what} {len(keys)} kernel keys: {shown}{more}; {way_out}")


def read_measurements(path: Path | str,
                      check_arch: Callable[[str], object] | None = None) -> dict[str, float]:
    """`arch,latency_ms` rows (other columns, e.g. `index`, ignored) -> {arch: ms}; a bad row is
    named by its line number. `check_arch` raises InvalidInputError for an arch the space lacks."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "arch" not in header or "latency_ms" not in header:
                raise InvalidInputError(
                    f"{path}: needs a header with columns arch and latency_ms, got {header}"
                )
            out: dict[str, float] = {}
            first: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                arch, text = row["arch"], row["latency_ms"]
                try:
                    ms = float(text)
                except (TypeError, ValueError):
                    ms = math.nan
                if not (math.isfinite(ms) and ms > 0):
                    raise InvalidInputError(
                        f"{path} line {line}: latency_ms {text!r} of {arch!r} must be a positive number"
                    )
                if not arch:
                    raise InvalidInputError(f"{path} line {line}: empty arch")
                if check_arch is not None:
                    try:
                        check_arch(arch)
                    except InvalidInputError as e:
                        raise InvalidInputError(f"{path} line {line}: {e}") from None
                if arch in first:
                    raise InvalidInputError(
                        f"{path} line {line}: {arch!r} was already measured on line {first[arch]}"
                    )
                first[arch] = line
                out[arch] = ms
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read ({e.strerror})") from e
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvalidInputError(f"{path}: not a readable CSV file ({e})") from e
    return out


def reference_from_store(store: TableStore, device: str
                         ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """A reference device's table and its kernels' (MACs, bytes moved), for `fit_fewshot`: every
    entry of `device` whose work the store knows (`hwlat profile` records it; imported entries
    may lack it and are left out)."""
    feats = store.features()
    reference, features = {}, {}
    for e in store.entries(device):
        f = feats.get(e.key)
        if f is not None:
            reference[e.key] = e.median_ms
            features[e.key] = (float(f[1] or 0), float(f[2] or 0))
    if not reference:
        raise InvalidInputError(
            f"the table has no profiled entries for reference device '{device}'; profile models of "
            f"the space on it first (`hwlat profile MODEL.onnx --device {device}`)"
        )
    return reference, features


def fewshot_entries(device: str, fit: FewShotFit, reference_device: str) -> list[Entry]:
    """The fitted table as store entries under `device` (the overhead under OVERHEAD_KEY), marked
    as fitted rather than measured."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    versions = json.dumps({"hwlat": __version__, "reference": reference_device}, sort_keys=True)
    pipeline = f"fewshot:{reference_device}:{fit.n_models}-models"
    return [
        Entry(device=device, key=k, kind=OVERHEAD_KIND if k == OVERHEAD_KEY else k.partition("|")[0],
              median_ms=ms, q1_ms=ms, q3_ms=ms, cv=0.0, repeats=fit.n_models, threads=1,
              cpu="fitted", versions=versions, pipeline=pipeline, measured_at=at)
        for k, ms in sorted(fit.table.items())
    ]


def is_fitted(entry: Entry) -> bool:
    return entry.pipeline.startswith("fewshot:")


def fit_device_table(store: TableStore, device: str, reference_device: str,
                     measurements: Mapping[str, float], arch_kernels: Mapping[str, list[str]],
                     reference: tuple[dict[str, float], dict[str, tuple[float, float]]] | None = None,
                     groups: Mapping[str, str] | None = None) -> FewShotFit:
    """Fit `device`'s table from whole-model `measurements` against `reference_device`'s entries
    in `store` (or the given (reference ms, features), e.g. a roofline device's), and write it in
    place of any earlier fitted table of `device` (one transaction). A device with measured
    (profiled or imported) entries is refused: a fitted table would be mixed with, or
    overwrite, measurements."""
    if device == reference_device:
        raise InvalidInputError(
            f"the fitted device and the reference device are both '{device}': name the new device"
        )
    measured = [e for e in store.entries(device) if not is_fitted(e)]
    if measured:
        raise InvalidInputError(
            f"device '{device}' already has {len(measured)} measured entries in {store.path}; a "
            "fitted table would overwrite them: fit under another device name"
        )
    if reference is None:
        reference = reference_from_store(store, reference_device)
    fit = fit_fewshot_model(arch_kernels, measurements, *reference, groups)
    store.replace_device(device, fewshot_entries(device, fit, reference_device))
    return fit
