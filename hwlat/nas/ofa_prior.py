"""OFA MobileNetV3 with a multi-device prior (`hwlat.lut.prior`): whole-net timings of a set of
sampled subnets on several devices; a new device fitted from N of them.

The OFA space has ~10^19 subnets, so a prior cannot hold every one as NB201's does: it holds a
fixed set of archs (its `arch` column, in the one-line form below), each timed on every prior
device, and the new device is predicted on those archs (the candidates a search ranks). One
more column, as for NB201, is hwlat's own view of the arch: the roofline-sd855 latency of its
kernels (`ofa_mbv3_kernels`), summed; it exists for any arch.

One-line form of an arch (`ofa_arch_text`): `r224-k35.735.3573.35.735-e46.634.6343.34.463`: the
resolution, then per stage the kernel sizes and expand ratios of its active blocks (the depth
is how many). Blocks beyond a stage's depth do not run, so every network has exactly one text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.lut.prior import DevicePrior, PriorFit, fit_prior, propose

__all__ = [
    "HW_COLUMN",
    "SPACE",
    "ofa_arch_text",
    "ofa_hw_ms",
    "ofa_predict_prior",
    "ofa_prior_fit",
    "ofa_propose",
    "parse_ofa_arch_text",
    "read_ofa_prior",
]

SPACE = "ofa-mbv3"
HW_DEVICE = "roofline-sd855"
HW_COLUMN = f"hwlat:{HW_DEVICE}"


def ofa_arch_text(arch: Any) -> str:
    """The one-line form of an OFA MobileNetV3 arch dict (validated)."""
    from hwlat.nas.spaces import OFA_MBV3 as S

    a = S.validate(arch)
    stages_k, stages_e = [], []
    for s in range(S.n_stages):
        blocks = range(s * S.max_depth, s * S.max_depth + a["d"][s])
        stages_k.append("".join(str(a["ks"][j]) for j in blocks))
        stages_e.append("".join(str(a["e"][j]) for j in blocks))
    return f"r{a['r']}-k{'.'.join(stages_k)}-e{'.'.join(stages_e)}"


def parse_ofa_arch_text(text: Any) -> dict:
    """The arch dict of a one-line form (inactive blocks: the first choices); InvalidInputError
    saying what is wrong."""
    from hwlat.nas.spaces import OFA_MBV3 as S

    form = "r<resolution>-k<kernel sizes per stage, '.' between stages>-e<expand ratios, alike>"
    if not isinstance(text, str):
        raise InvalidInputError(f"OFA arch {text!r}: not a string of the form {form}")
    parts = text.strip().split("-")
    if len(parts) != 3 or parts[0][:1] != "r" or parts[1][:1] != "k" or parts[2][:1] != "e":
        raise InvalidInputError(f"OFA arch {text!r}: expected the form {form}")
    ks, es = parts[1][1:].split("."), parts[2][1:].split(".")
    if len(ks) != S.n_stages or len(es) != S.n_stages:
        raise InvalidInputError(f"OFA arch {text!r}: needs {S.n_stages} stages in k and in e")
    d, k_all, e_all = [], [], []
    for s, (k, e) in enumerate(zip(ks, es, strict=True)):
        if len(k) != len(e) or not k.isdigit() or not e.isdigit():
            raise InvalidInputError(f"OFA arch {text!r}: stage {s + 1} has {len(k)} kernel sizes "
                                    f"and {len(e)} expand ratios (digits, as many of each)")
        d.append(len(k))
        pad = S.max_depth - len(k)
        k_all += [int(c) for c in k] + [S.kernel_sizes[0]] * max(pad, 0)
        e_all += [int(c) for c in e] + [S.expand_ratios[0]] * max(pad, 0)
    try:
        r = int(parts[0][1:])
    except ValueError:
        raise InvalidInputError(f"OFA arch {text!r}: resolution {parts[0][1:]!r} is not a "
                                "number") from None
    try:
        return S.validate({"ks": k_all, "e": e_all, "d": d, "r": r})
    except InvalidInputError as err:
        raise InvalidInputError(f"OFA arch {text!r}: {err}") from None


@cache
def _roofline_keys() -> dict[str, float]:
    return {}


def ofa_hw_ms(archs: Sequence[str]) -> np.ndarray:
    """roofline-sd855's latency (ms) of each arch's kernels, summed."""
    from hwlat.analytic.roofline import roofline_reference
    from hwlat.nas.ofa_lut import ofa_mbv3_kernels

    keys = [ofa_mbv3_kernels(parse_ofa_arch_text(a)) for a in archs]
    cache_ = _roofline_keys()
    todo = {k.text(): k for ks in keys for k in ks if k.text() not in cache_}
    if todo:
        cache_.update(roofline_reference(HW_DEVICE, todo)[0])
    return np.array([sum(cache_[k.text()] for k in ks) for ks in keys])


def read_ofa_prior(path) -> DevicePrior:
    """A prior CSV of sampled OFA MobileNetV3 archs: an `arch` column (one-line forms) and one
    ms column per device; each arch once."""
    from hwlat.lut.prior import read_prior_csv

    return read_prior_csv(path, SPACE, None, canon=lambda a: ofa_arch_text(parse_ofa_arch_text(a)))


def _check_prior(prior: DevicePrior) -> None:
    if prior.space != SPACE or prior.archs is None:
        raise InvalidInputError(f"the prior is of space '{prior.space}', not {SPACE}")


def _raw(prior: DevicePrior, rows: Sequence[int], devices: Sequence[str], hw: bool) -> np.ndarray:
    raw = prior.ms[np.ix_(list(rows), [prior.devices.index(d) for d in devices])]
    if hw:
        raw = np.hstack([raw, ofa_hw_ms([prior.archs[i] for i in rows])[:, None]])
    return raw


def ofa_prior_fit(prior: DevicePrior, measured: Mapping[str, float], *, hw_column: bool = True,
                  penalties: tuple[float, float] | None = None) -> PriorFit:
    """Fit a new device from measured archs {one-line form: ms}, each one of the prior's archs."""
    _check_prior(prior)
    texts: dict[str, str] = {}
    for a in measured:
        t = ofa_arch_text(parse_ofa_arch_text(a))
        if t in texts:
            raise InvalidInputError(f"measured archs {texts[t]!r} and {a!r} are one network")
        texts[t] = a
    rows = prior.rows_of(list(texts))
    logs = prior.log_columns()
    columns, center = list(prior.devices), logs.mean(axis=0).tolist()
    scale, offsets = logs.std(axis=0).tolist(), [0.0] * len(prior.devices)
    if hw_column:
        hw = np.log(ofa_hw_ms(prior.archs))
        columns.append(HW_COLUMN)
        center.append(float(hw.mean()))
        scale.append(float(hw.std()))
        offsets.append(0.0)
    return fit_prior(_raw(prior, rows, prior.devices, hw_column),
                     np.array([measured[a] for a in texts.values()]), columns, len(prior.devices),
                     center, scale, offsets, space=SPACE, prior=prior.digest(), penalties=penalties)


def ofa_predict_prior(fit: PriorFit, prior: DevicePrior, archs: Sequence[str]) -> np.ndarray:
    """ms of each arch (one of the prior's) on the fitted device."""
    devices, extra = fit.columns[:fit.n_devices], fit.columns[fit.n_devices:]
    if fit.space != SPACE or prior.archs is None or prior.digest() != fit.prior \
            or extra not in ((), (HW_COLUMN,)) or not set(devices) <= set(prior.devices):
        raise InvalidInputError(f"the stored fit (space {fit.space}, columns {list(fit.columns)}) "
                                "does not match its prior; fit the device again")
    rows = prior.rows_of([ofa_arch_text(parse_ofa_arch_text(a)) for a in archs])
    return fit.predict(_raw(prior, rows, devices, bool(extra)))


def ofa_propose(prior: DevicePrior, n: int, *, hw_column: bool = True) -> list[str]:
    """N of the prior's archs to measure on a new device: spread over the leading principal
    components of the prior's log-latencies (and hwlat's roofline column)."""
    _check_prior(prior)
    logs = prior.log_columns()
    if hw_column:
        logs = np.hstack([logs, np.log(ofa_hw_ms(prior.archs))[:, None]])
    return [prior.archs[i] for i in propose(logs, n)]
