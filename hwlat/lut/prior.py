"""A new device from a few whole-model timings, with many measured devices as the prior.

A prior is a table of whole-model latencies of every architecture of a search space on D devices
(NAS-Bench-201: 15,625 cells x 13 devices in HW-NAS-Bench). Devices differ, but not arbitrarily:
on log scale, a new device's latencies are close to a linear combination of the prior devices'.
Given N architectures timed on the new device, the fit is

    log new_ms(a) = b + sum_j w_j * z_j(a),      z_j = (log ms_j - center_j) / scale_j

over the prior devices' standardised log-latencies (and optional extra columns, e.g. hwlat's own
roofline estimate of the architecture, `log(ms + offset)`), by ridge regression that pulls the
device weights towards "the mean of the prior devices" (every raw weight 1/D) and the extra
columns' weights towards 0. The intercept b is free. The two penalty strengths are picked from a
grid by leave-one-out error on the N measurements alone (closed form for ridge), ties going to
the stronger penalty. A device that is exactly such a combination is recovered from a few
measurements; ten measurements on NB201 give a mean Spearman of ~0.95 on devices left out of the
prior (benchmarks/fewshot_nb201.py --prior-devices).

What is stored: the prior once per content digest in the table's meta store (`prior:SPACE:DIGEST`,
JSON: device names and one list of ms per device, in the space's architecture order), and the fit
(`fit:DEVICE`, JSON numbers: columns, centers, scales, offsets, intercept, weights, penalties and the
prior's digest) with one marker entry `PRIOR_MODEL_KEY` under the device, so that the device is
listed like any table and a prediction knows to use the stored model. No pickle: numbers and JSON.

Which architectures to measure (`propose`): k-center (greedy farthest point) over the prior's
leading principal components of the standardised log-latencies: the N cells spread over what
makes devices disagree, which the combination's weights need.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.lut.store import Entry, TableStore
from hwlat.version import __version__

__all__ = [
    "PRIOR_MODEL_KEY",
    "DevicePrior",
    "PriorFit",
    "fit_prior",
    "propose",
    "read_prior_csv",
    "read_prior_fit",
    "store_prior",
    "stored_prior",
    "write_prior_fit",
]

PRIOR_MODEL_KEY = "prior-model"  # the marker entry of a device whose table is a fitted prior model
PRIOR_KIND = "prior-model"
_GRID = tuple(10.0 ** np.arange(3.0, -3.01, -0.5))  # penalties, strongest first (ties: strongest)
_SHOWN = 3
_EMBED = 3  # principal components the proposal spreads over


@dataclass(frozen=True)
class DevicePrior:
    """Whole-model latencies (ms) of every architecture of `space` on each prior device:
    ms[i, j] is architecture i (the space's own numbering) on devices[j]."""

    space: str
    devices: tuple[str, ...]
    ms: np.ndarray
    # a space too large to hold whole (OFA): the archs of the rows, a sample of the space, in
    # the space's one-line form; None: every arch of the space, in its own numbering (NB201)
    archs: tuple[str, ...] | None = None

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps([self.space, list(self.devices)]).encode())
        h.update(np.ascontiguousarray(self.ms, dtype="<f8").tobytes())
        if self.archs is not None:
            h.update(json.dumps(list(self.archs)).encode())
        return h.hexdigest()

    def to_json(self) -> str:
        obj = {"space": self.space, "devices": list(self.devices),
               "ms": [col.tolist() for col in self.ms.T]}
        if self.archs is not None:
            obj["archs"] = list(self.archs)
        return json.dumps(obj)

    @classmethod
    def from_json(cls, text: str, where: str) -> DevicePrior:
        try:
            obj = json.loads(text)
            ms = np.array(obj["ms"], dtype=float).T
            archs = tuple(map(str, obj["archs"])) if obj.get("archs") is not None else None
            prior = cls(str(obj["space"]), tuple(map(str, obj["devices"])), ms, archs)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidInputError(f"{where}: not a readable device prior ({e})") from e
        if ms.ndim != 2 or ms.shape[1] != len(prior.devices) or not np.all(np.isfinite(ms)) \
                or not np.all(ms > 0) or (archs is not None and len(archs) != len(ms)):
            raise InvalidInputError(f"{where}: a damaged device prior (shape {ms.shape})")
        return prior

    def rows_of(self, archs: Sequence[str]) -> list[int]:
        """Row numbers of archs (one-line forms) in a sampled prior; InvalidInputError naming
        the first that is not in it."""
        if self.archs is None:
            raise InvalidInputError(f"the {self.space} prior holds every arch: index it by the "
                                    "space's numbering")
        row = {a: i for i, a in enumerate(self.archs)}
        out = []
        for a in archs:
            if a not in row:
                raise InvalidInputError(
                    f"arch {a!r} is not among the prior's {len(self.archs)} {self.space} archs; "
                    "a fitted device is predicted on the prior's archs only")
            out.append(row[a])
        return out

    def log_columns(self, devices: Sequence[str] | None = None) -> np.ndarray:
        cols = [self.devices.index(d) for d in devices] if devices is not None else slice(None)
        return np.log(self.ms[:, cols])


def read_prior_csv(path: Path | str, space: str, index_of: Callable[[str], int] | None,
                   size: int = 0, *, canon: Callable[[str], str] | None = None) -> DevicePrior:
    """A prior from a CSV: an `arch` column, optionally `index`, and one column of ms per device.
    With `index_of`: every architecture of the space once (`size` of them). With `canon` instead
    (arch text -> its one-line form; InvalidInputError for one the space lacks): a sample of the
    space, at least 2 archs, each once, in file order. Every latency a positive number; anything
    else is refused with one line naming the row (or the architectures missing)."""
    path = Path(path)
    sampled: list[str] = []
    if (index_of is None) == (canon is None):
        raise InvalidInputError("read_prior_csv: give index_of (the whole space) or canon (a sample)")
    if canon is not None:
        seen: dict[str, int] = {}

        def index_of(arch: str) -> int:  # a sample's rows: in file order
            text = canon(arch)
            i = seen.setdefault(text, len(seen))
            if i == len(sampled):
                sampled.append(text)
            return i
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or "arch" not in header:
                raise InvalidInputError(f"{path}: needs a header with an arch column and one "
                                        f"latency column (ms) per device, got {header}")
            arch_col = header.index("arch")
            dev_cols = [j for j, name in enumerate(header) if name not in ("arch", "index")]
            devices = [header[j].strip() for j in dev_cols]
            if not devices:
                raise InvalidInputError(f"{path}: no device columns besides arch and index")
            dup = [d for d in devices if not d or devices.count(d) > 1]
            if dup:
                raise InvalidInputError(f"{path}: device column {dup[0]!r} is empty or repeated")
            rows_ms: dict[int, list[float]] = {}
            first: dict[int, int] = {}
            for row in reader:
                line = reader.line_num
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise InvalidInputError(f"{path} line {line}: {len(row)} fields, the header "
                                            f"has {len(header)}")
                arch = row[arch_col]
                try:
                    i = index_of(arch)
                except InvalidInputError as e:
                    raise InvalidInputError(f"{path} line {line}: {e}") from None
                if i in first:
                    raise InvalidInputError(f"{path} line {line}: arch {arch!r} is already on "
                                            f"line {first[i]}")
                first[i] = line
                values = []
                for j, d in zip(dev_cols, devices, strict=True):
                    try:
                        v = float(row[j])
                    except ValueError:
                        v = math.nan
                    if not (math.isfinite(v) and v > 0):
                        raise InvalidInputError(f"{path} line {line}: latency {row[j]!r} of "
                                                f"{arch!r} on {d!r} must be a positive number of ms")
                    values.append(v)
                rows_ms[i] = values
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read ({e.strerror})") from e
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvalidInputError(f"{path}: not a readable CSV file ({e})") from e
    if canon is not None:
        if len(sampled) < 2:
            raise InvalidInputError(f"{path}: {len(sampled)} {space} archs; a prior of sampled "
                                    "archs needs at least 2")
        ms = np.array([rows_ms[i] for i in range(len(sampled))], dtype=float)
        return DevicePrior(space, tuple(devices), ms, tuple(sampled))
    if len(first) < size:
        missing = [i for i in range(size) if i not in first]
        raise InvalidInputError(
            f"{path}: {len(missing)} of the {size} architectures of {space} are missing (numbers "
            f"{', '.join(map(str, missing[:_SHOWN]))}{' ...' if len(missing) > _SHOWN else ''}); "
            "a prior holds every architecture of the space"
        )
    ms = np.array([rows_ms[i] for i in range(size)], dtype=float)
    return DevicePrior(space, tuple(devices), ms)


@dataclass(frozen=True)
class PriorFit:
    """A new device's log-latency as a fitted combination of prior columns (JSON-able numbers)."""

    space: str
    prior: str  # the prior's digest
    columns: tuple[str, ...]  # the prior devices used, then extra columns
    n_devices: int
    offsets: tuple[float, ...]  # a column is log(ms + offset); 0 for prior devices
    center: tuple[float, ...]
    scale: tuple[float, ...]
    intercept: float
    weights: tuple[float, ...]  # on the standardised columns
    penalties: tuple[float, float]  # (device weights, extra columns), by leave-one-out
    loo_error: float  # rms leave-one-out error of log ms on the N measurements
    n_models: int

    def features(self, raw_ms: np.ndarray) -> np.ndarray:
        """Standardised columns from raw ms [archs, columns]."""
        return (np.log(raw_ms + np.array(self.offsets)) - np.array(self.center)) / np.array(self.scale)

    def predict(self, raw_ms: np.ndarray) -> np.ndarray:
        """ms of each architecture from its raw columns (ms on the prior devices, then extras)."""
        return np.exp(self.intercept + self.features(raw_ms) @ np.array(self.weights))

    def raw_weights(self) -> dict[str, float]:
        """The exponent of each column: new ms ~ exp(b') * prod (ms_j + offset_j) ** raw_j."""
        return {c: w / s for c, w, s in zip(self.columns, self.weights, self.scale, strict=True)}

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.__dataclass_fields__}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> PriorFit:
        try:
            obj = json.loads(text)
            fit = cls(
                space=str(obj["space"]), prior=str(obj["prior"]),
                columns=tuple(map(str, obj["columns"])), n_devices=int(obj["n_devices"]),
                **{k: tuple(float(v) for v in obj[k])
                   for k in ("offsets", "center", "scale", "weights", "penalties")},
                intercept=float(obj["intercept"]), loo_error=float(obj["loo_error"]),
                n_models=int(obj["n_models"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(f"{where}: not a readable prior fit ({e})") from e
        n = len(fit.columns)
        if not all(len(getattr(fit, k)) == n for k in ("offsets", "center", "scale", "weights")):
            raise InvalidInputError(f"{where}: a damaged prior fit (column counts differ)")
        return fit

    def describe(self) -> str:
        top = sorted(self.raw_weights().items(), key=lambda kv: -abs(kv[1]))
        shown = ", ".join(f"{c} {w:+.3f}" for c, w in top[:6])
        return (f"log ms = {self.intercept:.3f} + combination of {len(self.columns)} columns "
                f"(largest exponents: {shown}); penalties {self.penalties}; leave-one-out error "
                f"{math.expm1(self.loo_error):.1%} (rms, log) on {self.n_models} models")


def fit_prior(raw_ms: np.ndarray, measured_ms: np.ndarray, columns: Sequence[str],
              n_devices: int, center: Sequence[float], scale: Sequence[float],
              offsets: Sequence[float] | None = None, *, space: str = "", prior: str = "",
              penalties: tuple[float, float] | None = None) -> PriorFit:
    """Fit the new device on N measured architectures: `raw_ms` [N, columns] their ms on the
    prior devices (the first `n_devices` columns) and extra columns, `measured_ms` [N] on the new
    device. `center`/`scale` standardise log(raw + offset) over the whole space. `penalties`
    (device weights, extra columns; > 0) skips the leave-one-out search."""
    raw_ms = np.asarray(raw_ms, dtype=float)
    y_ms = np.asarray(measured_ms, dtype=float)
    n, k = raw_ms.shape if raw_ms.ndim == 2 else (0, 0)
    if raw_ms.ndim != 2 or k != len(columns) or len(y_ms) != n or not 0 < n_devices <= k:
        raise InvalidInputError(f"fit_prior: raw_ms {raw_ms.shape}, {len(columns)} columns, "
                                f"{len(y_ms)} measurements, {n_devices} devices do not match")
    if n < 2:
        raise InvalidInputError(f"a prior fit needs at least 2 measured models, got {n}")
    if not (np.all(np.isfinite(y_ms)) and np.all(y_ms > 0)):
        raise InvalidInputError("measured latencies must be positive numbers of ms")
    offsets = tuple(float(v) for v in (offsets if offsets is not None else [0.0] * k))
    fit = PriorFit(space=space, prior=prior, columns=tuple(columns), n_devices=n_devices,
                   offsets=offsets, center=tuple(map(float, center)),
                   scale=tuple(float(s) if s > 0 else 1.0 for s in scale), intercept=0.0,
                   weights=(0.0,) * k, penalties=(0.0, 0.0), loo_error=0.0, n_models=n)
    z = fit.features(raw_ms)
    y = np.log(y_ms)
    # the shrinkage target: every prior device's raw weight 1/D, extras 0
    w0 = np.array([fit.scale[j] / n_devices if j < n_devices else 0.0 for j in range(k)])
    r = y - z @ w0
    a = np.hstack([np.ones((n, 1)), z])
    is_dev = np.arange(k) < n_devices
    grid = [penalties] if penalties is not None else list(
        itertools.product(_GRID, _GRID if k > n_devices else _GRID[:1]))
    best = None
    for lam in grid:
        if len(lam) != 2 or not all(v > 0 for v in lam):
            raise InvalidInputError(f"penalties {lam!r}: need two numbers > 0")
        pen = np.diag(np.concatenate([[0.0], np.where(is_dev, lam[0], lam[1])]))
        gram = a.T @ a + pen
        hat = a @ np.linalg.solve(gram, a.T)
        lev = np.minimum(np.diag(hat), 1 - 1e-9)
        loo = float(np.sqrt(np.mean(((r - hat @ r) / (1 - lev)) ** 2)))
        if best is None or loo < best[0] - 1e-12:
            best = (loo, tuple(float(v) for v in lam), np.linalg.solve(gram, a.T @ r))
    loo, lam, theta = best
    return PriorFit(**{**fit.__dict__, "intercept": float(theta[0]),
                       "weights": tuple((theta[1:] + w0).tolist()), "penalties": lam,
                       "loo_error": loo})


def propose(prior_log: np.ndarray, n: int, candidates: np.ndarray | None = None,
            components: int = _EMBED) -> list[int]:
    """N architectures (row numbers) to measure: greedy k-center over the leading principal
    components of the standardised prior log-latencies [archs, devices], starting from the
    candidate nearest the centroid; `candidates` (bool mask) restricts the choice."""
    rows = len(prior_log)
    cand = np.ones(rows, bool) if candidates is None else np.asarray(candidates, bool)
    if not 1 <= n <= int(cand.sum()):
        raise InvalidInputError(f"propose: N must be 1..{int(cand.sum())}, got {n}")
    sd = prior_log.std(axis=0)
    z = (prior_log - prior_log.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    emb = u[:, :components] * s[:components]
    centroid = emb[cand].mean(axis=0)
    dist = np.where(cand, np.linalg.norm(emb - centroid, axis=1), np.inf)
    chosen = [int(np.argmin(dist))]
    far = np.linalg.norm(emb - emb[chosen[0]], axis=1)
    while len(chosen) < n:
        far[~cand] = -1.0
        far[chosen] = -1.0
        i = int(np.argmax(far))
        chosen.append(i)
        far = np.minimum(far, np.linalg.norm(emb - emb[i], axis=1))
    return chosen


# --- in the table -------------------------------------------------------------------------------


def _prior_key(space: str, digest: str | None = None) -> str:
    return f"prior:{space}" + (f":{digest}" if digest else "")


def store_prior(store: TableStore, prior: DevicePrior, *, current: bool = True) -> str:
    """Store the prior once (by digest); with `current`, it becomes the space's prior that
    `stored_prior` returns. Returns the digest."""
    digest = prior.digest()
    items = {} if store.meta(_prior_key(prior.space, digest)) else \
        {_prior_key(prior.space, digest): prior.to_json()}
    if current:
        items[_prior_key(prior.space)] = digest
    if items:
        store.put_meta(items)
    return digest


def stored_prior(store: TableStore, space: str, digest: str | None = None) -> DevicePrior:
    """The space's current prior (or the one of `digest`)."""
    digest = digest or store.meta(_prior_key(space))
    text = store.meta(_prior_key(space, digest)) if digest else None
    if text is None:
        raise InvalidInputError(
            f"the table {store.path} holds no device prior for {space}"
            + (f" (digest {digest[:12]})" if digest else "")
            + f"; store one with `hwlat lut prior import FILE.csv --space {space}`"
        )
    return DevicePrior.from_json(text, f"{store.path} prior {digest[:12]}")


def write_prior_fit(store: TableStore, device: str, fit: PriorFit, prior: DevicePrior) -> None:
    """Replace `device`'s table by the fitted prior model (and store the prior it needs), in one
    transaction; a device with measured entries is refused."""
    measured = [e for e in store.entries(device) if not e.pipeline.startswith("fewshot:")]
    if measured:
        raise InvalidInputError(
            f"device '{device}' already has {len(measured)} measured entries in {store.path}; a "
            "fitted table would overwrite them: fit under another device name"
        )
    if device in prior.devices:
        raise InvalidInputError(f"device '{device}' is one of the prior's devices: name the new "
                                "device")
    digest = prior.digest()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    entry = Entry(device=device, key=PRIOR_MODEL_KEY, kind=PRIOR_KIND, median_ms=0.0, q1_ms=0.0,
                  q3_ms=0.0, cv=0.0, repeats=fit.n_models, threads=1, cpu="fitted",
                  versions=json.dumps({"hwlat": __version__, "prior": digest}, sort_keys=True),
                  pipeline=f"fewshot:prior:{fit.space}:{digest[:12]}:{fit.n_models}-models",
                  measured_at=at)
    meta = {f"fit:{device}": fit.to_json()}
    if store.meta(_prior_key(prior.space, digest)) is None:
        meta[_prior_key(prior.space, digest)] = prior.to_json()
    store.replace_device_with_meta(device, [entry], meta)


def read_prior_fit(store: TableStore, device: str) -> tuple[PriorFit, DevicePrior] | None:
    """The device's fitted prior model and its prior, or None when the device's table is not one."""
    if store.get(device, PRIOR_MODEL_KEY) is None:
        return None
    text = store.meta(f"fit:{device}")
    if text is None:
        raise InvalidInputError(f"{store.path}: device '{device}' is marked as a prior fit but its "
                                "model is missing; fit it again with `hwlat lut fit`")
    fit = PriorFit.from_json(text, f"{store.path} fit of '{device}'")
    return fit, stored_prior(store, fit.space, fit.prior)
