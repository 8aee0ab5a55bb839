"""The metric catalog: metric name -> resource dimension, kind, unit and capacity (data in catalog.yaml).

    cat = load_catalog()
    cat["DCGM_FI_DEV_GPU_UTIL"].dimension   # 'compute'
    cat.get("unknown_metric")                # None: not a resource signal hopscope knows
    cat.link_of("", "gpu-node-1", {"device": "eth1"})   # a user's map entry: this NIC is model-server's

Edit ``hopscope/catalog.yaml``, not code, to teach hopscope a new signal; a user adds or overrides
entries and maps label values to a service or an edge in hopscope.toml (``[[diagnosis.signals]]``,
``[[diagnosis.map]]``: ``extend``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from hopscope.errors import ConfigError
from hopscope.model import HOP_SEPARATOR, Hop

DEFAULT_PATH = Path(__file__).with_name("catalog.yaml")
DIMENSIONS = ("compute", "bandwidth", "memory")
KINDS = ("gauge", "counter")
_MAX_BYTES = 1_000_000
_KEYS = {
    "dimension",
    "kind",
    "unit",
    "higher_is_worse",
    "capacity_value",
    "capacity_metric",
    "capacity_sum",
    "bad_bits",
    "label_dimensions",
    "role",
}
# what a signal says about its resource: ``demand`` rose because traffic rose (requests, packets: context,
# not a cause); ``saturation`` is the resource at its limit (a queue, drops, throttling, stall time);
# ``utilization`` is a level, judged against its capacity where one is known
ROLES = ("utilization", "saturation", "demand")


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One catalog entry."""

    name: str
    dimension: str
    kind: str
    unit: str = ""
    higher_is_worse: bool = True
    capacity_value: float | None = None  # a fixed capacity (100 %, ratio 1)
    capacity_metric: str | None = None  # capacity read from another metric with the same labels
    capacity_sum: tuple[str, ...] = ()  # capacity = sum of these metrics (FB_USED + FB_FREE)
    bad_bits: int | None = None  # bitmask metrics: the bits that mean "worse" (clock-event reasons)
    # label -> value -> dimension override ('none' = context only, not a resource signal)
    label_dimensions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    role: str = "utilization"  # utilization | saturation | demand (see ROLES)

    @property
    def is_counter(self) -> bool:
        return self.kind == "counter"

    def dimension_for(self, labels: Mapping[str, str] | None) -> str:
        """The dimension of one series: the metric's, unless a label value overrides it."""
        if labels and self.label_dimensions:
            for key, table in self.label_dimensions.items():
                value = labels.get(key)
                if value is not None and value in table:
                    return table[value]
        return self.dimension


# map keys that name a sample's own columns; every other key is one of its labels
COLUMN_KEYS = ("service", "host")


@dataclass(frozen=True, slots=True)
class LabelLink:
    """A user's map entry: a series whose labels (and ``service``/``host``) match every key of
    ``match`` (one of the values listed) belongs to ``service``, or to the network hop ``edge``."""

    match: tuple[tuple[str, tuple[str, ...]], ...]
    service: str | None = None
    edge: str | None = None

    @property
    def target(self) -> str:
        return self.edge or self.service or ""

    def services(self) -> set[str]:
        """The services whose series a diagnosis reads for this entry's target (an edge: both ends)."""
        if self.edge:
            hop = Hop.parse(self.edge)
            return {hop.client, hop.server}
        return {self.service} if self.service else set()

    def matches(self, service: str, host: str, labels: Mapping[str, str]) -> bool:
        for key, values in self.match:
            value = service if key == "service" else host if key == "host" else labels.get(key)
            if value is None or value not in values:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Catalog:
    metrics: Mapping[str, MetricInfo]
    source: str = ""
    links: tuple[LabelLink, ...] = ()  # the user's label map, first match wins

    def __getitem__(self, name: str) -> MetricInfo:
        return self.metrics[name]

    def __contains__(self, name: object) -> bool:
        return name in self.metrics

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def get(self, name: str) -> MetricInfo | None:
        return self.metrics.get(name)

    def counters(self) -> list[str]:
        return [m.name for m in self.metrics.values() if m.is_counter]

    def link_of(self, service: str, host: str, labels: Mapping[str, str]) -> LabelLink | None:
        """The first map entry this series matches, if any."""
        for link in self.links:
            if link.matches(service, host, labels):
                return link
        return None

    def capacity_metrics(self) -> set[str]:
        """Metrics that only give another metric's capacity."""
        out: set[str] = set()
        for m in self.metrics.values():
            if m.capacity_metric:
                out.add(m.capacity_metric)
        return out


def _entry(where: str, name: str, raw: Any) -> MetricInfo:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (keys: {', '.join(sorted(_KEYS))})")
    dimension = raw.get("dimension")
    if dimension not in DIMENSIONS:
        raise ConfigError(f"{where}.dimension: {dimension!r} is not one of {', '.join(DIMENSIONS)}")
    kind = raw.get("kind", "gauge")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    cap = raw.get("capacity_value")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float) or cap <= 0):
        raise ConfigError(f"{where}.capacity_value: {cap!r} is not a positive number")
    cap_sum = raw.get("capacity_sum") or ()
    if not isinstance(cap_sum, list | tuple) or not all(isinstance(x, str) for x in cap_sum):
        raise ConfigError(f"{where}.capacity_sum: {cap_sum!r} is not a list of metric names")
    bad_bits = raw.get("bad_bits")
    if bad_bits is not None and (isinstance(bad_bits, bool) or not isinstance(bad_bits, int)):
        raise ConfigError(f"{where}.bad_bits: {bad_bits!r} is not an integer bitmask")
    role = raw.get("role", "utilization")
    if role not in ROLES:
        raise ConfigError(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
    label_dims = raw.get("label_dimensions") or {}
    if not isinstance(label_dims, dict):
        raise ConfigError(f"{where}.label_dimensions: {label_dims!r} is not a mapping")
    for key, table in label_dims.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}.label_dimensions.{key}: {table!r} is not a mapping")
        for value, dim in table.items():
            if dim not in (*DIMENSIONS, "none"):
                raise ConfigError(
                    f"{where}.label_dimensions.{key}.{value}: {dim!r} is not a dimension or 'none'"
                )
    return MetricInfo(
        name=name,
        dimension=dimension,
        kind=kind,
        unit=str(raw.get("unit", "")),
        higher_is_worse=bool(raw.get("higher_is_worse", True)),
        capacity_value=float(cap) if cap is not None else None,
        capacity_metric=raw.get("capacity_metric"),
        capacity_sum=tuple(cap_sum),
        bad_bits=bad_bits,
        label_dimensions={str(k): {str(v): str(d) for v, d in t.items()} for k, t in label_dims.items()},
        role=role,
    )


def parse_catalog(doc: Any, source: str = "catalog.yaml") -> Catalog:
    """Build a Catalog from the parsed YAML document; ConfigError names the entry and key."""
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise ConfigError(f"{source}: expected a top-level 'metrics:' mapping")
    return Catalog(
        {
            str(name): _entry(f"{source}: metrics.{name}", str(name), raw)
            for name, raw in doc["metrics"].items()
        },
        source,
    )


def extend(
    base: Catalog, signals: Sequence[Any], links: Sequence[Any], source: str = "hopscope.toml"
) -> Catalog:
    """``base`` with a user's signals added (an entry of the same name replaces the packaged one
    whole) and their label map; ConfigError names the entry (``diagnosis.signals[1].dimension``)."""
    metrics = dict(base.metrics)
    seen: dict[str, int] = {}
    for i, raw in enumerate(signals):
        where = f"{source}: diagnosis.signals[{i}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected a table ([[diagnosis.signals]]), got {raw!r}")
        name = raw.get("name")
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            raise ConfigError(f"{where}.name: {name!r} is not a metric name such as node_qdisc_backlog")
        if name in seen:
            raise ConfigError(
                f"{where}.name: {name!r} is declared twice (also diagnosis.signals[{seen[name]}])"
            )
        seen[name] = i
        metrics[name] = _entry(where, name, {k: v for k, v in raw.items() if k != "name"})
    parsed = tuple(_link(f"{source}: diagnosis.map[{i}]", raw) for i, raw in enumerate(links))
    return Catalog(metrics, f"{base.source} + {source}" if base.source else source, (*base.links, *parsed))


def _is_label_value(v: Any) -> bool:
    return (isinstance(v, str) and v != "") or (isinstance(v, int) and not isinstance(v, bool))


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LINK_KEYS = {"match", "service", "edge"}


def _link(where: str, raw: Any) -> LabelLink:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table ([[diagnosis.map]]), got {raw!r}")
    unknown = sorted(set(raw) - _LINK_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (keys: {', '.join(sorted(_LINK_KEYS))})")
    match = raw.get("match")
    if not isinstance(match, Mapping) or not match:
        raise ConfigError(
            f'{where}.match: {match!r} is not a table of labels, e.g. match = {{ device = "eth1", host = "gpu-1" }}'
        )
    pairs: list[tuple[str, tuple[str, ...]]] = []
    for key, value in match.items():
        values = value if isinstance(value, list) else [value]
        # a CPU or a port may be written as a number: label values are text
        if not values or not all(_is_label_value(v) for v in values):
            raise ConfigError(
                f"{where}.match.{key}: {value!r} is not a label value or a list of them "
                '(cpu = ["2", "3"], device = "eth1")'
            )
        pairs.append((str(key), tuple(str(v) for v in values)))
    service, edge = raw.get("service"), raw.get("edge")
    if (service is None) == (edge is None):
        raise ConfigError(
            f'{where}: name one of service = "..." or edge = "client->server", not {"both" if service else "neither"}'
        )
    if service is not None and (not isinstance(service, str) or not service or HOP_SEPARATOR in service):
        raise ConfigError(f"{where}.service: {service!r} is not a service name (an edge goes in edge = ...)")
    if edge is not None:
        client, sep, server = edge.partition(HOP_SEPARATOR) if isinstance(edge, str) else ("", "", "")
        if not (sep and client and server and HOP_SEPARATOR not in server):
            raise ConfigError(
                f'{where}.edge: {edge!r} is not a network hop such as "api-gateway->model-server"'
            )
    return LabelLink(tuple(pairs), service, edge)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load the catalog (default: the one shipped in hopscope/catalog.yaml)."""
    return _load(str(Path(path) if path else DEFAULT_PATH))


@lru_cache(maxsize=8)
def _load(path: str) -> Catalog:
    p = Path(path)
    try:
        if p.stat().st_size > _MAX_BYTES:
            raise ConfigError(f"{p}: catalog larger than {_MAX_BYTES} bytes")
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the catalog: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    return parse_catalog(doc, str(p))
