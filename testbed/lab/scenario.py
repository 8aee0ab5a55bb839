"""A lab scenario as data: the topology (services, calls, SLO) and the schedule (phases, faults, truth).

Pure: YAML in, frozen records out; every refusal names the file, the path inside it and the bad value.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
ROLES = ("gateway", "feature_store", "model_server")
FAULT_KINDS = ("bandwidth", "cpu", "memory")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit)$")
_SIZE = re.compile(r"^\d+(b|kb|mb)?$")
_TIME = re.compile(r"^\d+(ms|s)$")


class ScenarioError(ValueError):
    """A scenario or topology file that cannot run; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Call:
    service: str
    route: str
    keys: int = 0  # feature keys asked for (feature store)
    candidates: int = 0  # candidate embeddings sent (model server)


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    role: str
    port: int
    metrics_port: int
    calls: tuple[Call, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()  # role-specific numbers (dim, cache_entries, layers, ...)

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


@dataclass(frozen=True, slots=True)
class SLOSpec:
    name: str
    threshold_ms: float
    objective: float
    alert_long: str
    alert_short: str
    alert_factor: float


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    subnet: ipaddress.IPv4Network
    port_rate: str
    entry_service: str
    entry_route: str
    services: tuple[Service, ...]
    slo: SLOSpec

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def address(self, name: str) -> str:
        """The service's address: .2 of its link's /24 (link i = the i-th service, from 1)."""
        i = [s.name for s in self.services].index(name) + 1
        return str(self.subnet.network_address + (i << 8) + 2)

    def router_address(self, link: int) -> str:
        return str(self.subnet.network_address + (link << 8) + 1)

    @property
    def host_address(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def router_host_address(self) -> str:
        return str(self.subnet.network_address + 2)


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    kind: str  # bandwidth | cpu | memory
    service: str  # the link into this service (bandwidth) or this service's cgroup (cpu, memory)
    settings: tuple[tuple[str, str], ...]

    def setting(self, key: str) -> str:
        return dict(self.settings)[key]


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    seconds: float
    rps: float
    faults: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    source: Path
    topology: Topology
    seed: int
    phases: tuple[Phase, ...]
    faults: tuple[Fault, ...]
    truth: tuple[tuple[str, dict[str, Any]], ...]  # fault name -> what scenario.json says about it

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def fault(self, name: str) -> Fault:
        for f in self.faults:
            if f.name == name:
                return f
        raise KeyError(name)


def _fail(file: Path, path: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{file}: {path}: {msg}")


def _mapping(doc: Any, file: Path, path: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _fail(file, path or "(top)", f"{doc!r} is not a mapping")
    return doc


def _num(d: dict[str, Any], key: str, file: Path, path: str, lo: float = 0.0) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= lo:
        raise _fail(file, f"{path}.{key}", f"{v!r} is not a number over {lo:g}")
    return float(v)


def _name(v: Any, file: Path, path: str) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise _fail(file, path, f"{v!r} is not a name (lower-case letters, digits, '-', up to 31)")
    return v


def _pattern(v: Any, pattern: re.Pattern[str], file: Path, path: str, example: str) -> str:
    if not isinstance(v, str) or not pattern.match(v):
        raise _fail(file, path, f"{v!r} is not like {example!r}")
    return v


def load_topology(file: Path) -> Topology:
    d = _mapping(yaml.safe_load(file.read_text()), file, "")
    try:
        subnet = ipaddress.IPv4Network(str(d.get("subnet")))
    except ValueError as exc:
        raise _fail(file, "subnet", f"{d.get('subnet')!r}: {exc}") from None
    if subnet.prefixlen > 16:
        raise _fail(file, "subnet", f"{subnet} is smaller than a /16 (one /24 per link)")
    raw = d.get("services")
    if not isinstance(raw, list) or not raw:
        raise _fail(file, "services", f"{raw!r} is not a non-empty list")
    services: list[Service] = []
    for i, s in enumerate(raw):
        at = f"services[{i}]"
        s = _mapping(s, file, at)
        role = s.get("role")
        if role not in ROLES:
            raise _fail(file, f"{at}.role", f"{role!r} is not one of {', '.join(ROLES)}")
        calls = []
        for j, c in enumerate(s.get("calls") or []):
            c = _mapping(c, file, f"{at}.calls[{j}]")
            calls.append(
                Call(
                    service=_name(c.get("service"), file, f"{at}.calls[{j}].service"),
                    route=str(c.get("route", "/")),
                    keys=int(c.get("keys", 0)),
                    candidates=int(c.get("candidates", 0)),
                )
            )
        params = tuple(
            sorted((k, v) for k, v in s.items() if k not in ("name", "role", "port", "metrics_port", "calls"))
        )
        services.append(
            Service(
                name=_name(s.get("name"), file, f"{at}.name"),
                role=str(role),
                port=int(_num(s, "port", file, at)),
                metrics_port=int(_num(s, "metrics_port", file, at)),
                calls=tuple(calls),
                params=params,
            )
        )
    names = {s.name for s in services}
    for s in services:
        for c in s.calls:
            if c.service not in names:
                raise _fail(file, f"services.{s.name}.calls", f"{c.service!r} is not a service of this file")
    entry = _mapping(d.get("entry"), file, "entry")
    if entry.get("service") not in names:
        raise _fail(file, "entry.service", f"{entry.get('service')!r} is not a service of this file")
    slo = _mapping(d.get("slo"), file, "slo")
    alert = _mapping(slo.get("alert"), file, "slo.alert")
    objective = _num(slo, "objective", file, "slo")
    if objective >= 1:
        raise _fail(file, "slo.objective", f"{objective!r} is not a ratio in (0, 1)")
    return Topology(
        name=str(d.get("name", file.stem)),
        subnet=subnet,
        port_rate=_pattern(d.get("port_rate", "1gbit"), _RATE, file, "port_rate", "1gbit"),
        entry_service=str(entry["service"]),
        entry_route=str(entry.get("route", "/")),
        services=tuple(services),
        slo=SLOSpec(
            name=str(slo.get("name", "lab-latency")),
            threshold_ms=_num(slo, "threshold_ms", file, "slo"),
            objective=objective,
            alert_long=str(alert.get("long", "2m")),
            alert_short=str(alert.get("short", "1m")),
            alert_factor=_num(alert, "factor", file, "slo.alert"),
        ),
    )


def _fault(name: str, d: dict[str, Any], file: Path, topo: Topology) -> Fault:
    at = f"faults.{name}"
    kind = d.get("kind")
    if kind not in FAULT_KINDS:
        raise _fail(file, f"{at}.kind", f"{kind!r} is not one of {', '.join(FAULT_KINDS)}")
    service = d.get("service")
    if service not in {s.name for s in topo.services}:
        raise _fail(file, f"{at}.service", f"{service!r} is not a service of the topology")
    settings: dict[str, str] = {}
    if kind == "bandwidth":
        settings["rate"] = _pattern(d.get("rate"), _RATE, file, f"{at}.rate", "10mbit")
        settings["burst"] = _pattern(str(d.get("burst", "32kb")), _SIZE, file, f"{at}.burst", "32kb")
        settings["latency"] = _pattern(str(d.get("latency", "400ms")), _TIME, file, f"{at}.latency", "400ms")
    elif kind == "cpu":
        cpus = _num(d, "cpus", file, at)
        settings["cpus"] = f"{cpus:g}"
    else:
        settings["headroom_mb"] = f"{int(_num(d, 'headroom_mb', file, at))}"
    return Fault(name=name, kind=str(kind), service=str(service), settings=tuple(sorted(settings.items())))


def load_scenario(path: Path | str) -> Scenario:
    """A scenario by file path, or by name under testbed/lab/scenarios/."""
    file = Path(path)
    if not file.exists() and not file.suffix:
        file = SCENARIOS / f"{path}.yaml"
    if not file.exists():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml") if p.stem != "topology"))
        raise ScenarioError(f"{path}: no such scenario file or name (known: {known})")
    d = _mapping(yaml.safe_load(file.read_text()), file, "")
    topo = load_topology(file.parent / str(d.get("topology", "topology.yaml")))
    faults = tuple(
        _fault(str(k), _mapping(v, file, f"faults.{k}"), file, topo)
        for k, v in _mapping(d.get("faults") or {}, file, "faults").items()
    )
    known_faults = {f.name for f in faults}
    phases: list[Phase] = []
    raw = d.get("phases")
    if not isinstance(raw, list) or not raw:
        raise _fail(file, "phases", f"{raw!r} is not a non-empty list")
    for i, p in enumerate(raw):
        p = _mapping(p, file, f"phases[{i}]")
        names = tuple(str(x) for x in p.get("faults") or ())
        for n in names:
            if n not in known_faults:
                raise _fail(file, f"phases[{i}].faults", f"{n!r} is not under faults:")
        phases.append(
            Phase(
                name=str(p.get("name", f"phase-{i}")),
                seconds=_num(p, "seconds", file, f"phases[{i}]"),
                rps=_num(p, "rps", file, f"phases[{i}]"),
                faults=names,
            )
        )
    truth = _mapping(d.get("truth") or {}, file, "truth")
    for k in truth:
        if k not in known_faults and k not in {p.name for p in phases}:
            raise _fail(file, f"truth.{k}", "names neither a fault nor a phase")
    return Scenario(
        name=_name(d.get("name", file.stem), file, "name"),
        description=str(d.get("description", "")),
        source=file.resolve(),
        topology=topo,
        seed=int(d.get("seed", 0)),
        phases=tuple(phases),
        faults=faults,
        truth=tuple((str(k), dict(_mapping(v, file, f"truth.{k}"))) for k, v in truth.items()),
    )
