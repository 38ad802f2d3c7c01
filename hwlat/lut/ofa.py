"""Once-for-All latency tables: read and write OFA's per-resolution YAML, and predict with them.

OFA publishes one `<R>_lookup_table.yaml` per input resolution R (e.g. its Samsung Note10 tables),
each a map `KEY: {count, mean, std}` in milliseconds, written by PyYAML as

    expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0:
      count: 500
      mean: 0.994418
      std: 0.01726798413249215

Only that form is read (PyYAML is not a dependency). In the hwlat table an OFA entry has the key
`ofa:<R>:<OFA key>` and kind "ofa_block"; its quartiles are mean -/+ 0.6745 std (a normal's), so
an export gives back the mean exactly and the std as (q3 - q1) / 1.349 (less where q1 was clamped
at 0). A network's latency is OFA's sum (MBv3LatencyTable.predict_network_latency_given_config):
first conv + every block + final expand (Conv_1) + global pool + feature mix (Conv_2) + classifier.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.lut.io import _read_text
from hwlat.lut.store import Entry, TableError, TableStore

KIND = "ofa_block"
PREFIX = "ofa:"
_Z_Q3 = 0.6745  # the upper quartile of a standard normal
_SHOWN = 3  # offending keys or lines quoted per error


class OfaKeyMissing(HwlatError, LookupError):
    """A network needs OFA keys the device's table lacks; names the first and the resolutions held."""

    def __init__(self, device: str, resolution: int, missing: list[str], resolutions: list[int]):
        self.device, self.resolution, self.resolutions = device, resolution, resolutions
        self.keys = missing
        self.key = missing[0]
        if not resolutions:
            held = (f"device '{device}' has no OFA entries; import them with "
                    f"`hwlat lut import --format ofa DIR --device {device}`")
        else:
            held = f"the table has OFA resolutions {', '.join(map(str, resolutions))} for '{device}'"
        why = (f"resolution {resolution} is not in the table" if resolution not in resolutions
               else f"{len(missing)} of the network's keys are missing")
        super().__init__(
            f"no OFA entry for '{self.key}' at resolution {resolution} on device '{device}' "
            f"({why}; {held})"
        )


class OfaLayer(Enum):
    CONV = "Conv"  # first conv
    BLOCK = "expanded_conv"  # one MBConv block
    CONV_1 = "Conv_1"  # final expand 1x1
    AVGPOOL = "AvgPool2D"  # global average pool
    CONV_2 = "Conv_2"  # feature mix 1x1
    LOGITS = "Logits"  # classifier


_BLOCK_FIELDS = ("expand", "kernel", "stride", "idskip", "se", "hs")


@dataclass(frozen=True)
class OfaKey:
    """One OFA table key; `text()` is the key as OFA writes it."""

    layer: OfaLayer
    input: tuple[int, int, int]  # H, W, C
    output: tuple[int, ...]  # H, W, C; (classes,) for Logits
    expand: int | None = None  # the block's middle channels; the rest are blocks' only too
    kernel: int | None = None
    stride: int | None = None
    idskip: int | None = None  # 1: identity shortcut
    se: int | None = None  # 1: squeeze-excite
    hs: int | None = None  # 1: h_swish activation

    def __post_init__(self) -> None:
        block = [getattr(self, f) for f in _BLOCK_FIELDS]
        is_block = self.layer is OfaLayer.BLOCK
        ok = (
            isinstance(self.layer, OfaLayer)
            and len(self.input) == 3
            and len(self.output) == (1 if self.layer is OfaLayer.LOGITS else 3)
            and all(_positive(v) for v in (*self.input, *self.output))
            and (all(_positive(v) for v in block[:3]) and all(v in (0, 1) for v in block[3:])
                 if is_block else all(v is None for v in block))
        )
        if not ok:
            raise InvalidInputError(f"invalid OFA key fields {self!r}")

    def text(self) -> str:
        parts = [self.layer.value, "input:" + _dims(self.input), "output:" + _dims(self.output)]
        if self.layer is OfaLayer.BLOCK:
            parts += [f"{f}:{getattr(self, f)}" for f in _BLOCK_FIELDS]
        return "-".join(parts)


_DIMS = r"([0-9]+)x([0-9]+)x([0-9]+)"
_KEY_RES = (  # (regex, layer or None for "the first group names it")
    (re.compile(rf"(Conv|Conv_1|Conv_2|AvgPool2D)-input:{_DIMS}-output:{_DIMS}"), None),
    (re.compile(rf"Logits-input:{_DIMS}-output:([0-9]+)"), OfaLayer.LOGITS),
    (re.compile(rf"expanded_conv-input:{_DIMS}-output:{_DIMS}-expand:([0-9]+)-kernel:([0-9]+)"
                r"-stride:([0-9]+)-idskip:([01])-se:([01])-hs:([01])"), OfaLayer.BLOCK),
)
_EXAMPLE = "expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0"


def parse_ofa_key(key: str) -> OfaKey:
    """The OfaKey of an OFA table key; InvalidInputError quoting it when it is not one."""
    for regex, layer in _KEY_RES:
        m = regex.fullmatch(key) if isinstance(key, str) else None
        if m is None:
            continue
        if layer is None:
            layer, *n = OfaLayer(m[1]), *map(int, m.groups()[1:])
        else:
            n = list(map(int, m.groups()))
        out = 1 if layer is OfaLayer.LOGITS else 3
        try:
            parsed = OfaKey(layer, tuple(n[:3]), tuple(n[3:3 + out]), *n[3 + out:])
        except InvalidInputError:
            break
        if parsed.text() == key:  # no leading zeros: one key, one text
            return parsed
        break
    shown = repr(key) if len(repr(key)) <= 160 else repr(key)[:157] + "..."
    raise InvalidInputError(f"malformed OFA key {shown}; expected e.g. '{_EXAMPLE}'")


def ofa_table_key(resolution: int, key: str) -> str:
    """The hwlat table key of an OFA key at one input resolution."""
    return f"{PREFIX}{resolution}:{key}"


_TABLE_KEY_RE = re.compile(rf"{PREFIX}([1-9][0-9]*):(.*)", re.DOTALL)


def _split_table_key(text: str) -> tuple[int, str]:
    m = _TABLE_KEY_RE.fullmatch(text)
    if m is None:
        raise InvalidInputError(f"malformed OFA table key {text[:160]!r}; expected 'ofa:R:KEY'")
    parse_ofa_key(m[2])
    return int(m[1]), m[2]


# --- the YAML form

_FIELD_RE = re.compile(r" +([A-Za-z_]+): *(.*?) *")
_NUMBER_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_YAML_FIELDS = ("count", "mean", "std")


def read_ofa_yaml(path: Path | str) -> dict[str, tuple[int, float, float]]:
    """key -> (count, mean, std) of one OFA table file; TableError quoting what does not fit."""
    path = Path(path)
    fields: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    current: dict[str, str] | None = None  # the fields of the key being read
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        if not line[0].isspace():
            key = line.rstrip()[:-1]
            current = {}  # fields under a bad key are skipped, not reported again
            if not line.rstrip().endswith(":"):
                problems.append(f"line {n}: {_quote(line)} is neither 'KEY:' nor '  field: value'")
            elif not _is_key(key):
                problems.append(f"line {n}: malformed key {_quote(key)}")
            elif key in fields:
                problems.append(f"line {n}: duplicate key {_quote(key)}")
            else:
                current = fields[key] = {}
            continue
        m = _FIELD_RE.fullmatch(line)
        if current is None or m is None or m[1] not in _YAML_FIELDS or m[1] in current:
            what = ("before any key" if current is None else "is not 'count', 'mean' or 'std'"
                    if m is None or m[1] not in _YAML_FIELDS else "repeats a field")
            problems.append(f"line {n}: {_quote(line)} {what}")
        else:
            current[m[1]] = m[2]
    table = {}
    for key, got in fields.items():
        try:
            table[key] = _row(key, got)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise TableError(
            f"{path} is not an OFA latency table: {'; '.join(problems[:_SHOWN])}{more}"
        )
    if not table:
        raise TableError(f"{path} holds no OFA latency entries")
    return table


def write_ofa_yaml(path: Path | str, entries: Mapping[str, tuple[int, float, float]]) -> int:
    """Write key -> (count, mean, std) in OFA's form, atomically; returns how many were written."""
    path = Path(path)
    _write_files({path: _yaml_text(path, entries)})
    return len(entries)


def _row(key: str, got: dict[str, str]) -> tuple[int, float, float]:
    missing = [f for f in _YAML_FIELDS if f not in got]
    if missing:
        raise ValueError(f"key {_quote(key)} has no {', '.join(missing)}")
    count = got["count"]
    if not (count.isascii() and count.isdigit() and int(count) >= 1):
        raise ValueError(f"key {_quote(key)}: count {_quote(count)} is not a positive integer")
    values = []
    for name in ("mean", "std"):
        text = got[name]
        if _NUMBER_RE.fullmatch(text) is None or not math.isfinite(float(text)) or float(text) < 0:
            raise ValueError(f"key {_quote(key)}: {name} {_quote(text)} is not a number >= 0")
        values.append(float(text) + 0.0)
    return int(count), values[0], values[1]


def _yaml_text(path: Path, entries: Mapping[str, tuple[int, float, float]]) -> str:
    lines = []
    for key in sorted(entries):  # PyYAML's order, as in OFA's files
        row = entries[key]
        ok = (_is_key(key) and isinstance(row, tuple) and len(row) == 3 and _positive(row[0])
              and all(_finite_nonneg(v) for v in row[1:]))
        if not ok:
            raise TableError(f"cannot write {path}: bad entry {_quote(str(key))}: {row!r:.80}")
        count, mean, std = row
        lines += [f"{key}:", f"  count: {count}", f"  mean: {_yaml_float(mean)}",
                  f"  std: {_yaml_float(std)}"]
    return "\n".join(lines) + "\n"


def _yaml_float(x: float) -> str:
    # repr reads back to the same float; PyYAML only takes a float with a '.', as it writes them
    s = repr(float(x))
    return s.replace("e", ".0e", 1) if "e" in s and "." not in s else s


def _write_files(texts: dict[Path, str]) -> None:
    """Write each file to a temporary beside it and rename them all only once every one is
    written, so a failure leaves no partial file behind."""
    for path in texts:
        if path.exists() and not path.is_file():
            raise TableError(f"cannot write {path}: something other than a file is in the way")
    tmps: dict[Path, Path] = {}
    path = None
    try:
        for path, text in texts.items():
            tmps[path] = tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with open(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    except OSError as e:
        raise TableError(f"cannot write {path}: {e.strerror}") from e
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


# --- a folder of OFA tables <-> the hwlat table

_FILE_RE = re.compile(r"([1-9][0-9]*)_lookup_table\.yaml")


def import_ofa_dir(store: TableStore, directory: Path | str, device: str) -> int:
    """Validate every `<R>_lookup_table.yaml` in a folder, then store them all in one transaction
    as `ofa:<R>:<key>` entries of the device; returns how many. A bad file stores nothing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TableError(f"{directory}: no such folder")
    files = sorted(directory.glob("*_lookup_table.yaml"))
    if not files:
        raise TableError(f"{directory} holds no <resolution>_lookup_table.yaml files (OFA tables)")
    tables: dict[int, dict[str, tuple[int, float, float]]] = {}
    problems = []
    for file in files:
        m = _FILE_RE.fullmatch(file.name)
        if m is None:
            problems.append(f"{file}: name is not <resolution>_lookup_table.yaml")
            continue
        try:
            tables[int(m[1])] = table = read_ofa_yaml(file)
        except TableError as e:
            problems.append(str(e))
            continue
        # a misnamed file would silently answer for the wrong resolution
        r = int(m[1])
        stems = [k for k in table if k.startswith("Conv-") and parse_ofa_key(k).input[:2] != (r, r)]
        if stems:
            problems.append(f"{file}: first-conv key {_quote(stems[0])} is not at resolution {r}")
    if problems:
        raise TableError(f"nothing imported: {' | '.join(problems)}")
    at = datetime.now(UTC).isoformat(timespec="seconds")
    entries = []
    for r, table in tables.items():
        for key, (count, mean, std) in table.items():
            half = _Z_Q3 * std
            entries.append(Entry(
                device=device, key=ofa_table_key(r, key), kind=KIND, median_ms=mean,
                q1_ms=max(mean - half, 0.0), q3_ms=mean + half, cv=std / mean if mean > 0 else 0.0,
                repeats=count, threads=1, cpu="imported", versions='{"source": "ofa-yaml"}',
                pipeline="ofa-import", measured_at=at,
            ))
    return store.put_many(entries)


def export_ofa_dir(store: TableStore, directory: Path | str, device: str) -> int:
    """Write the device's `ofa:` entries as one `<R>_lookup_table.yaml` per resolution; returns
    how many entries. Every file is written, or none."""
    directory = Path(directory)
    tables: dict[int, dict[str, tuple[int, float, float]]] = defaultdict(dict)
    bad = []
    for e in store.entries(device):
        if not e.key.startswith(PREFIX):
            continue
        try:
            r, key = _split_table_key(e.key)
        except InvalidInputError:
            bad.append(_quote(e.key))
            continue
        tables[r][key] = (e.repeats, e.median_ms, (e.q3_ms - e.q1_ms) / (2 * _Z_Q3))
    if bad:
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise TableError(
            f"{store.path}: device '{device}' has malformed OFA keys {', '.join(bad[:_SHOWN])}{more};"
            " nothing written"
        )
    if not tables:
        raise TableError(f"{store.path} has no OFA entries (keys 'ofa:R:...') for device '{device}'")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TableError(f"cannot create {directory}: {e.strerror}") from e
    texts = {directory / f"{r}_lookup_table.yaml": _yaml_text(directory, t)
             for r, t in sorted(tables.items())}
    _write_files(texts)
    return sum(len(t) for t in tables.values())


# --- networks

_ACTS = ("h_swish", "relu", "relu6")


def ofa_network_keys(net_config: dict, image_size: int) -> list[str]:
    """The OFA keys of a MobileNetV3 net config at one resolution, in OFA's order: Conv, one
    expanded_conv per block, Conv_1, AvgPool2D, Conv_2, Logits."""
    return [k.text() for k in _network(net_config, image_size)]


@dataclass(frozen=True)
class OfaRow:
    key: str  # OFA key, without the `ofa:R:` prefix
    ms: float


@dataclass(frozen=True)
class OfaPrediction:
    device: str
    image_size: int
    rows: tuple[OfaRow, ...]

    @property
    def latency_ms(self) -> float:
        return sum(r.ms for r in self.rows)  # in OFA's order, as OFA adds them

    def to_json(self) -> dict:
        return {
            "device": self.device,
            "space": "ofa-mbv3",
            "image_size": self.image_size,
            "latency_ms": self.latency_ms,
            "rows": [{"key": r.key, "ms": r.ms} for r in self.rows],
        }


def predict_ofa(store: TableStore, device: str, config: dict) -> OfaPrediction:
    """OFA's latency of an OFA net config file's content `{"image_size": R, "net": {...}}`: the sum
    of its keys' medians at resolution R; OfaKeyMissing when the table lacks any."""
    if not isinstance(config, dict) or not {"image_size", "net"} <= config.keys():
        got = sorted(map(str, config)) if isinstance(config, dict) else type(config).__name__
        raise InvalidInputError(
            f"an OFA net config file holds {{'image_size': R, 'net': {{...}}}}; got {got}"
        )
    size = config["image_size"]
    keys = ofa_network_keys(config["net"], size)
    found = store.get_many(device, (ofa_table_key(size, k) for k in keys))
    missing = [k for k in dict.fromkeys(keys) if ofa_table_key(size, k) not in found]
    if missing:
        held = set()
        for k in store.keys(device):
            m = _TABLE_KEY_RE.fullmatch(k)
            if m is not None:
                held.add(int(m[1]))
        raise OfaKeyMissing(device, size, missing, sorted(held))
    rows = tuple(OfaRow(k, found[ofa_table_key(size, k)].median_ms) for k in keys)
    return OfaPrediction(device, size, rows)


def _network(net: dict, image_size: int) -> list[OfaKey]:
    """One walk over an OFA MobileNetV3 config, as MBv3LatencyTable walks it."""
    if not isinstance(net, dict):
        raise InvalidInputError(f"net config must be a JSON object, not {type(net).__name__}")
    if "net" in net and "blocks" not in net:
        raise InvalidInputError("pass the 'net' object of an OFA config file, not the whole file")
    if net.get("name") != "MobileNetV3":
        why = ("OFA's ProxylessNAS family, which OFA's MobileNetV3 latency tables do not describe"
               if net.get("name") == "ProxylessNASNets" else "expected 'MobileNetV3'")
        raise InvalidInputError(f"net.name={net.get('name')!r}: {why}")
    if not _positive(image_size):
        raise InvalidInputError(f"image_size={image_size!r}: must be a positive integer")

    first = _layer(net, "first_conv", "net", ("ConvLayer",))
    c_in, c = _ints(first, "net.first_conv", "in_channels", "out_channels")
    f = _out_size(image_size, *_ints(first, "net.first_conv", "stride"))
    keys = [OfaKey(OfaLayer.CONV, (image_size, image_size, c_in), (f, f, c))]

    blocks = net.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise InvalidInputError("net.blocks must be a non-empty list of blocks")
    for i, block in enumerate(blocks):
        where = f"net.blocks[{i}]"
        if not isinstance(block, dict) or block.get("name") not in (
            "MobileInvertedResidualBlock", "ResidualBlock"
        ):
            name = block.get("name") if isinstance(block, dict) else block
            raise InvalidInputError(
                f"{where}.name={name!r}: unknown block type; expected MobileInvertedResidualBlock"
            )
        field = "mobile_inverted_conv" if "mobile_inverted_conv" in block else "conv"
        conv = _layer(block, field, where, ("MBInvertedConvLayer", "MBConvLayer"))
        cw = f"{where}.{field}"
        in_c, out_c, ks, stride = _ints(conv, cw, "in_channels", "out_channels", "kernel_size",
                                        "stride")
        _chain(cw, "in_channels", in_c, c)
        mid = conv.get("mid_channels")
        if mid is None:  # OFA: an expand-1 block keeps its input width
            ratio = conv.get("expand_ratio")
            if not _finite_nonneg(ratio) or not 0 < ratio <= _MAX_EXPAND:
                raise InvalidInputError(f"{cw}.expand_ratio={repr(ratio)[:60]}: must be a number "
                                        f"in (0, {_MAX_EXPAND}]")
            mid = round(in_c * ratio)
        elif not _positive(mid):
            raise InvalidInputError(f"{cw}.mid_channels={mid!r}: must be a positive integer")
        act, se = conv.get("act_func"), conv.get("use_se")
        if act not in _ACTS:
            raise InvalidInputError(f"{cw}.act_func={act!r}: unknown; known: {', '.join(_ACTS)}")
        if not isinstance(se, bool):
            raise InvalidInputError(f"{cw}.use_se={se!r}: must be true or false")
        if "shortcut" not in block:
            raise InvalidInputError(f"{where}.shortcut is missing (null for none)")
        skip = block["shortcut"] is not None
        if skip:
            _layer(block, "shortcut", where, ("IdentityLayer",))
        out_f = _out_size(f, stride)
        keys.append(OfaKey(OfaLayer.BLOCK, (f, f, in_c), (out_f, out_f, out_c), mid, ks, stride,
                           int(skip), int(se), int(act == "h_swish")))
        f, c = out_f, out_c

    final = _layer(net, "final_expand_layer", "net", ("ConvLayer",))
    final_in, final_out = _ints(final, "net.final_expand_layer", "in_channels", "out_channels")
    _chain("net.final_expand_layer", "in_channels", final_in, c)
    mix = _layer(net, "feature_mix_layer", "net", ("ConvLayer",))
    mix_in, mix_out = _ints(mix, "net.feature_mix_layer", "in_channels", "out_channels")
    _chain("net.feature_mix_layer", "in_channels", mix_in, final_out)
    head = _layer(net, "classifier", "net", ("LinearLayer",))
    head_in, classes = _ints(head, "net.classifier", "in_features", "out_features")
    _chain("net.classifier", "in_features", head_in, mix_out)
    return keys + [
        OfaKey(OfaLayer.CONV_1, (f, f, c), (f, f, final_out)),
        OfaKey(OfaLayer.AVGPOOL, (f, f, final_out), (1, 1, final_out)),
        OfaKey(OfaLayer.CONV_2, (1, 1, mix_in), (1, 1, mix_out)),
        OfaKey(OfaLayer.LOGITS, (1, 1, head_in), (classes,)),
    ]


def _layer(parent: dict, field: str, where: str, names: tuple[str, ...]) -> dict:
    layer = parent.get(field)
    name = layer.get("name") if isinstance(layer, dict) else None
    if name not in names:
        shown = (f"{where}.{field}.name={name!r}" if isinstance(layer, dict)
                 else f"{where}.{field}={layer!r:.60}")
        raise InvalidInputError(f"{shown}: unknown layer type; expected {' or '.join(names)}")
    return layer


def _ints(layer: dict, where: str, *names: str) -> list[int]:
    for name in names:
        if not _positive(layer.get(name)):
            value = repr(layer[name]) if name in layer else "missing"
            raise InvalidInputError(f"{where}.{name}={value}: must be a positive integer")
    return [layer[n] for n in names]


def _chain(where: str, field: str, got: int, expected: int) -> None:
    if got != expected:
        raise InvalidInputError(f"{where}.{field}={got}, but the layer before gives {expected}")


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # OFA's int((fsize - 1) / stride + 1): "same" padding


def _dims(dims: tuple[int, ...]) -> str:
    return "x".join(map(str, dims))


def _is_key(key: str) -> bool:
    try:
        parse_ofa_key(key)
    except InvalidInputError:
        return False
    return True


_MAX_EXPAND = 64  # OFA's spaces expand by 3 to 6


def _positive(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _finite_nonneg(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _quote(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 160 else shown[:157] + "..."
