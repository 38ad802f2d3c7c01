"""Learned per-kind latency predictors: gradient-boosted trees over kernel features.

Per device and kernel kind, an xgboost model of log(latency) over `hwlat.lut.features` is fitted
on the table's entries of that kind (profiled and sampled alike, less those whose runs spread
wider than MAX_TRAIN_CV; `hwlat lut train`). It is
stored in the table file, in the `predictors` table, as xgboost's own JSON
(`Booster.save_raw("json")`; never pickle) with a format version, the feature names, the
training set's size and its cross-validated error (RMSE of log latency, over 5 folds). That
error is the estimate's uncertainty: exp(cv) - 1 is the typical relative error of the kind.

Predictors are trained on one clock (`hwlat.lut.predict`): "wall" (the entries' medians) or
"cpu" (their thread CPU times; entries without one are left out); the table's meta says which
(`predictors_clock:DEVICE`, wall where absent), and a prediction in the other clock does not
use them.

A stored predictor that is of another version, was fitted on other features or cannot be read
back is refused with one line (TableError), and nothing in the table is touched.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from hwlat.lut.features import FEATURE_NAMES, FEATURE_VERSION, key_features
from hwlat.lut.store import TableError, TableStore

PREDICTOR_VERSION = 1  # bump with anything that changes what a stored model means
MIN_TRAIN = 12  # entries of a kind before a model of it is trained
MAX_TRAIN_CV = 0.3  # an entry whose runs spread wider than this is no latency to learn from
FOLDS = 5
FORMAT = "xgboost-json"
_PARAMS = {"objective": "reg:squarederror", "max_depth": 5, "eta": 0.08, "subsample": 0.85,
           "colsample_bytree": 0.85, "min_child_weight": 2, "lambda": 1.0, "nthread": 1, "seed": 0}
ROUNDS = 300
_SCHEMA = ("CREATE TABLE IF NOT EXISTS predictors (device TEXT NOT NULL, kind TEXT NOT NULL, "
           "format TEXT NOT NULL, version INTEGER NOT NULL, features TEXT NOT NULL, n_train INTEGER NOT NULL, "
           "cv_rmse REAL NOT NULL, model BLOB NOT NULL, trained_at TEXT NOT NULL, "
           "PRIMARY KEY (device, kind)) WITHOUT ROWID")


def training_set(store: TableStore, device: str, kind: str | None = None,
                 exclude: frozenset[str] = frozenset(),
                 clock: str = "wall") -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """kind -> (keys, features, log latency) of the device's entries (less `exclude`)."""
    macs = {k: m for k, (_, m, _) in store.features().items()}
    cpu = store.cpu_times(device) if clock == "cpu" else None
    by: dict[str, tuple[list, list, list]] = {}
    for e in store.entries(device):
        if cpu is not None:
            c = cpu.get(e.key)
            if c is None:
                continue
            ms, cv = c.cpu_ms, c.cpu_cv
        else:
            ms, cv = e.median_ms, e.cv
        if (kind is not None and e.kind != kind) or e.key in exclude or ms <= 0 or cv > MAX_TRAIN_CV:
            continue
        try:
            f = key_features(e.key, macs.get(e.key))
        except ValueError:
            continue
        keys, xs, ys = by.setdefault(e.kind, ([], [], []))
        keys.append(e.key)
        xs.append(f)
        ys.append(math.log(ms))
    return {k: (keys, np.array(xs), np.array(ys)) for k, (keys, xs, ys) in by.items()}


def _fit(x: np.ndarray, y: np.ndarray):
    import xgboost as xgb

    return xgb.train(_PARAMS, xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES)), ROUNDS)


def _predict(booster, x: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(np.atleast_2d(x), feature_names=list(FEATURE_NAMES)))


def _cv(x: np.ndarray, y: np.ndarray, keys: list[str]) -> dict[str, float]:
    """key -> |log error| of each entry predicted by a model fitted without its fold."""
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(y)) % FOLDS
    err = np.zeros(len(y))
    for f in range(FOLDS):
        test = fold == f
        if test.all() or not test.any():
            continue
        err[test] = np.abs(_predict(_fit(x[~test], y[~test]), x[test]) - y[test])
    return dict(zip(keys, err.tolist(), strict=True))


def cv_errors(store: TableStore, device: str, kind: str, clock: str = "wall") -> dict[str, float]:
    """Cross-validated |log error| of each of the kind's entries; empty with too few entries."""
    data = training_set(store, device, kind, clock=clock).get(kind)
    if data is None or len(data[0]) < MIN_TRAIN:
        return {}
    keys, x, y = data
    return _cv(x, y, keys)


@dataclass(frozen=True)
class TrainReport:
    kind: str
    n_train: int
    cv_rmse: float  # RMSE of log latency over the folds


def train(store: TableStore, device: str, exclude: frozenset[str] = frozenset(),
          clock: str = "wall") -> list[TrainReport]:
    """Fit one model per kind with at least MIN_TRAIN entries (of `clock`: "wall" or "cpu") and
    store them all, replacing the device's stored predictors in one transaction."""
    if clock not in ("wall", "cpu"):
        raise TableError(f"unknown clock {clock!r}: choose wall or cpu")
    rows, reports = [], []
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for kind, (keys, x, y) in sorted(training_set(store, device, exclude=exclude, clock=clock).items()):
        if len(y) < MIN_TRAIN:
            continue
        errs = np.array(list(_cv(x, y, keys).values()))
        cv = float(np.sqrt(np.mean(errs ** 2)))
        raw = bytes(_fit(x, y).save_raw("json"))
        rows.append((device, kind, FORMAT, PREDICTOR_VERSION, json.dumps(list(FEATURE_NAMES)), len(y), cv, raw, now))
        reports.append(TrainReport(kind, len(y), cv))
    if not reports:
        raise TableError(f"{store.path}: no kind has {MIN_TRAIN} entries for device '{device}' to train on; "
                         f"run `hwlat profile` or `hwlat lut sample --device {device}` first")
    with store._write():
        store._db.execute(_SCHEMA)
        store._db.execute("DELETE FROM predictors WHERE device = ?", (device,))
        store._db.executemany("INSERT INTO predictors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        store._db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (_clock_key(device), clock))
    return reports


def _clock_key(device: str) -> str:
    return f"predictors_clock:{device}"


def trained_clock(store: TableStore, device: str) -> str:
    """The clock the device's stored predictors were trained on (wall where the table says none)."""
    return store.meta(_clock_key(device)) or "wall"


@dataclass(frozen=True)
class KindModel:
    kind: str
    booster: object
    n_train: int
    cv_rmse: float


def load_models(store: TableStore, device: str) -> dict[str, KindModel]:
    """The device's stored predictors by kind ({} where none was trained); refused with one
    TableError if any is of another version, other features, or damaged."""
    import xgboost as xgb

    if store._db.execute("SELECT name FROM sqlite_master WHERE name = 'predictors'").fetchone() is None:
        return {}
    rows = store._db.execute("SELECT kind, format, version, features, n_train, cv_rmse, model "
                             "FROM predictors WHERE device = ?", (device,)).fetchall()
    out = {}
    for kind, fmt, version, feats, n, cv, blob in rows:
        where = f"{store.path}: the stored {kind} predictor for '{device}'"
        if fmt != FORMAT or version != PREDICTOR_VERSION:
            raise TableError(f"{where} is {fmt} version {version}; this hwlat reads {FORMAT} version "
                             f"{PREDICTOR_VERSION} — run `hwlat lut train --device {device}` again")
        try:
            names = json.loads(feats)
        except ValueError:
            names = None
        if names != list(FEATURE_NAMES):
            raise TableError(f"{where} was fitted on other features (feature version {FEATURE_VERSION} "
                             f"here) — run `hwlat lut train --device {device}` again")
        if not isinstance(blob, bytes | bytearray) or not (isinstance(cv, float) and math.isfinite(cv)) \
                or not isinstance(n, int) or n < 1:
            raise TableError(f"{where} is damaged — run `hwlat lut train --device {device}` again")
        booster = xgb.Booster(params={"nthread": 1})
        try:
            booster.load_model(bytearray(blob))
            if booster.num_features() != len(FEATURE_NAMES):
                raise ValueError("feature count")
        except (xgb.core.XGBoostError, ValueError) as e:
            raise TableError(f"{where} is damaged ({' '.join(str(e).split())[:120]}) — run "
                             f"`hwlat lut train --device {device}` again") from e
        out[kind] = KindModel(kind, booster, n, float(cv))
    return out


class LearnedEstimator:
    """Estimates table misses with the device's trained per-kind models; a kind without one goes
    to `fallback` (the power-law MissEstimator)."""

    def __init__(self, models: dict[str, KindModel], fallback):
        self.models = models
        self.fallback = fallback

    @classmethod
    def for_device(cls, store: TableStore, device: str, fallback_factory,
                   clock: str = "wall") -> LearnedEstimator | None:
        if trained_clock(store, device) != clock:
            return None
        models = load_models(store, device)
        if not models:
            return None
        return cls(models, _Lazy(fallback_factory))

    def estimate(self, kind: str, cost) -> tuple[float, str]:
        return self.fallback.estimate(kind, cost)

    def estimate_key(self, key: str, kind: str, cost) -> tuple[float, str, float | None]:
        """(ms, source, uncertainty as a relative error) of one kernel."""
        m = self.models.get(kind)
        if m is None:
            ms, how = self.fallback.estimate(kind, cost)
            return ms, how, None
        log_ms = float(_predict(m.booster, key_features(key, cost.macs))[0])
        unc = math.exp(m.cv_rmse) - 1
        return math.exp(log_ms), f"estimate: gbt {kind}, {m.n_train} entries, ±{unc:.0%}", unc


class _Lazy:
    def __init__(self, factory):
        self.factory, self.obj = factory, None

    def estimate(self, kind: str, cost):
        if self.obj is None:
            self.obj = self.factory()
        return self.obj.estimate(kind, cost)
