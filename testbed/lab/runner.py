"""Run one lab scenario for real and judge hopscope's diagnosis against the scenario's truth.

Phases of a run (each prints one progress line):
  network   namespaces, veths and the router (testbed/lab/net.py)
  telemetry a node_exporter in every namespace (qdisc collector in the router's), Prometheus on the
            host scraping them and the services' prometheus_client endpoints, `hopscope collect`
            (OTLP on the host's lab address, probes through the router, the Prometheus pull)
  services  one process per service, inside its namespace (testbed/lab/service.py)
  containers one cgroup v1 group per service (cpu, cpuacct, memory: testbed/lab/cgroups.py) that the
            service starts in, exported in cAdvisor's names for Prometheus to scrape
  load      open-loop Poisson arrivals per the scenario's phases; faults applied at their phase's start
            and removed at its end (tc tbf on a router port; a CPU quota or a memory limit on a group)
  stop      services flush their spans, the daemon stops, the last minutes are rolled up
  diagnose  `hopscope incidents --json` and `hopscope explain --json` on the lab's store, top cause
            against truth, share of the added latency the hops explain, time to first alert

Everything started is stopped and everything built is deleted in a finally block (Ctrl-C included).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from testbed.lab import cgroups
from testbed.lab.cgroups import Cgroups, Exporter, container_name
from testbed.lab.net import PREFIX, Network, lab_lock, remove_stale
from testbed.lab.scenario import Fault, Phase, Scenario, Topology
from testbed.soak import _http_get, _kill_group, _spawn, _tail, free_port
from testbed.workdir import say_stderr, workdir

ROOT = Path(__file__).resolve().parents[2]
NODE_PORT = 9100
BINARIES = {
    "ip": "iproute2",
    "tc": "iproute2",
    "/usr/bin/prometheus": "prometheus",
    "/usr/bin/prometheus-node-exporter": "prometheus-node-exporter",
}
# What hopscope pulls from the lab's Prometheus: node_exporter's network, qdisc and memory series, and
# the client libraries' process series. The labels `service` and `host` come from the scrape config,
# which maps each namespace (and each router port) to its service: that mapping is the lab's data.
PULL_QUERY = (
    '{job=~"lab-.*",__name__=~"node_network_(receive|transmit)_(bytes|packets|drop|errs)_total'
    "|node_network_speed_bytes|node_netstat_Tcp_RetransSegs|node_qdisc_.*|node_memory_MemAvailable_bytes"
    "|node_memory_MemTotal_bytes|process_cpu_seconds_total|process_resident_memory_bytes"
    "|lab_requests_total|lab_request_seconds_(sum|count)|lab_feature_cache_[a-z_]+_total|container_[a-z_]+"
    '"}'
)
# What hopscope cannot know by itself, written as a user would in hopscope.toml: the feature cache's
# counters are resource signals (the lab's own names), and each container is its service's.
LAB_SIGNALS = """
[[diagnosis.signals]]
name = "lab_feature_cache_evictions_total"
dimension = "memory"
kind = "counter"
unit = "rows/s"
role = "saturation"

[[diagnosis.signals]]
name = "lab_feature_cache_lookups_total"
dimension = "memory"
kind = "counter"
unit = "1/s"
role = "saturation"
label_dimensions = { result = { hit = "none" } }   # misses only: a hit is the cache working
""" + "".join(
    f"""
[[diagnosis.signals]]
name = "container_pressure_{res}_{kind}_seconds_total"
dimension = "{dim}"
kind = "counter"
unit = "s/s"
role = "saturation"
"""
    # each container's memory pressure stall information (cgroups.py: cAdvisor's names, where the v2
    # hierarchy keeps it): the share of time its tasks waited for memory (reclaim, refaults). No
    # capacity: only its change counts. Its CPU stall time is exported but not declared: on this shared
    # host a group's CPU stall rises whenever it does more work of any kind (the feature store's, 0.03
    # -> 0.30 s/s under the memory fault, tied compute with memory), and a quota shows as throttling
    for res, dim in (("memory", "memory"),)
    for kind in ("waiting", "stalled")
)


class LabError(RuntimeError):
    """The lab could not run (not root, a binary missing, a component that did not start)."""


@dataclass
class PhaseStats:
    name: str
    start: str
    end: str
    rps_target: float
    faults: list[str]
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    over_threshold: float | None = None  # share of requests slower than the SLO's threshold


@dataclass
class Outcome:
    """The diagnosis against the truth, for the fault event of the scenario (or its healthy control)."""

    event: str
    expect_breach: bool
    expected: str | None  # "hop (dimension)"
    breached: bool
    incidents: int
    top: str | None  # "hop (dimension)" of the diagnosis' top cause
    top_hop_kind: str | None
    verdict: str | None
    correct: bool
    share_explained: float | None  # 1 - residual / added end-to-end mean
    added_mean_ms: float | None
    residual_ms: float | None
    first_alert_s: float | None  # end of the breach's first minute minus the fault's start
    incident_id: str | None
    rank: int | None = None  # where the expected (hop, dimension) stands among the causes (1 = top)
    at_once: int = 1  # faults with a breach expected in the same window (two faults at once: 2)
    causes: list[str] = field(default_factory=list)  # every cause named, "hop (dimension)", best first


@dataclass
class LabResult:
    scenario: str
    work: str | None
    seconds: float
    netem: bool
    phases: list[PhaseStats]
    outcomes: list[Outcome]
    incidents: list[dict[str, Any]] = field(default_factory=list)
    explain: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(o.correct for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def check_requirements(which: Callable[[str], str | None] = shutil.which, sc: Scenario | None = None) -> None:
    """Root and the binaries the lab drives (and, for ``sc``'s CPU and memory faults, cgroup v1);
    LabError naming what is missing."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth links, tc, cgroups): run it as root")
    missing = [f"{b} (Debian package {pkg})" for b, pkg in BINARIES.items() if not which(b)]
    if missing:
        raise LabError(f"missing: {', '.join(missing)}; `make system-packages` installs them as root")
    needs = sorted({f.kind for f in sc.faults if f.kind in ("cpu", "memory")}) if sc is not None else []
    why = cgroups.available() if needs else None
    if sc is not None and why:
        raise LabError(f"{sc.name}: {' and '.join(needs)} faults need cgroup v1 containers: {why}")


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def _q(value: object) -> str:
    return json.dumps(str(value))  # a TOML basic string is a JSON string for these values


# -- configuration files ----------------------------------------------------------------------


def write_rules(topo: Topology, rules: Path) -> None:
    """The lab's SLO on its entry route, and its short burn-rate window table (data only)."""
    (rules / "alert_windows").mkdir(parents=True, exist_ok=True)
    slo = topo.slo
    (rules / "alert_windows" / "lab.yaml").write_text(
        "apiVersion: hopscope/v1\nkind: AlertWindows\nname: lab\nperiod: 1d\nscale: windows\ntiers:\n"
        f"  - {{severity: page, long: {slo.alert_long}, short: {slo.alert_short}, factor: {slo.alert_factor:g}}}\n"
    )
    (rules / "lab.yaml").write_text(
        f"""apiVersion: hopscope/v1
kind: SLO
metadata:
  name: {slo.name}
spec:
  description: lab SLO on {topo.entry_service} {topo.entry_route} (from the topology's data)
  service: {topo.entry_service}
  objective: {slo.objective}
  window: 1d
  budgeting: occurrences
  sli:
    kind: latency
    service: {topo.entry_service}
    route: {topo.entry_route}
    thresholdMs: {slo.threshold_ms:g}
  alerting:
    policy: lab
    minEvents: 20
"""
    )


def write_prometheus(topo: Topology, net: Network, path: Path, cgroups_target: str | None = None) -> None:
    """Scrape every namespace's node_exporter and every service's metrics port, labelled by service.

    The router's node_exporter sees the ports toward the services: metric relabelling gives each port's
    series the service it leads to (device p<i> -> service), as one maps a switch port to a host.
    """
    lines = ["global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nscrape_configs:"]
    lines.append("  - job_name: lab-node\n    static_configs:")
    for s in topo.services:
        lines.append(
            f"      - targets: ['{topo.address(s.name)}:{NODE_PORT}']\n"
            f"        labels: {{service: {s.name}, host: {s.name}-node}}"
        )
    lines.append(
        f"  - job_name: lab-router\n    static_configs:\n"
        f"      - targets: ['{topo.router_host_address}:{NODE_PORT}']\n        labels: {{host: lab-router}}\n"
        "    metric_relabel_configs:"
    )
    for s in topo.services:
        lines.append(
            f"      - source_labels: [device]\n        regex: {net.ports[s.name]}\n"
            f"        target_label: service\n        replacement: {s.name}"
        )
    if cgroups_target:  # the containers' counters: no service label, hopscope.toml's map links them
        lines.append(
            f"  - job_name: lab-cgroups\n    static_configs:\n      - targets: ['{cgroups_target}']\n"
            "        labels: {host: lab-host}"
        )
    lines.append("  - job_name: lab-app\n    static_configs:")
    for s in topo.services:
        lines.append(
            f"      - targets: ['{topo.address(s.name)}:{s.metrics_port}']\n"
            f"        labels: {{service: {s.name}, host: {s.name}-node}}"
        )
    path.write_text("\n".join(lines) + "\n")


def write_config(topo: Topology, work: Path, ports: dict[str, int], prom_url: str) -> Path:
    probes = "".join(
        f"\n[[collect.probes.targets]]\nurl = {_q(f'http://{topo.address(s.name)}:{s.port}/health')}\n"
        f"service = {_q(s.name)}\n"
        for s in topo.services
        if s.name != topo.entry_service
    )
    text = f"""# generated by testbed/lab/runner.py
[store]
path = {_q(work / "store")}

[slo]
rules = {_q(work / "slo_rules")}

[collect]
rollup_interval_s = 10
maintain_interval_s = 60

[collect.otlp]
host = {_q(topo.host_address)}
http_port = {ports["otlp"]}
grpc_enabled = false

[collect.metrics]
host = "127.0.0.1"
port = {ports["metrics"]}

[collect.nvml]
enabled = false

[collect.network]
enabled = false

[collect.probes]
interval_s = 5
{probes}
[collect.prometheus]
url = {_q(prom_url)}
interval_s = 10
step_s = 5
lag_s = 5
backfill = "10m"
progress = false

[[collect.prometheus.queries]]
name = "lab"
query = {_q(PULL_QUERY)}
service_label = "service"
host_label = "host"
"""
    text += LAB_SIGNALS
    for s in topo.services:
        text += f"\n[[diagnosis.map]]\nmatch = {{ container = {_q(container_name(s.name))} }}\nservice = {_q(s.name)}\n"
    path = work / "hopscope.toml"
    path.write_text(text)
    return path


# -- processes ----------------------------------------------------------------------------------


class Procs:
    """Every process the lab started, stopped in reverse order by process group."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = _spawn(cmd, log, **kwargs)
        self.items.append((name, proc))
        return proc

    def stop(self, name: str, grace_s: float = 10.0) -> int | None:
        for n, proc in self.items:
            if n == name:
                _kill_group(proc, grace_s=grace_s)
                return proc.returncode
        return None

    def stop_all(self) -> None:
        for _name, proc in reversed(self.items):
            if proc.poll() is None:
                _kill_group(proc, grace_s=5.0)


def wait_http(what: str, url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"{what} exited with {proc.returncode} while starting:\n{_tail(log)}")
        with contextlib.suppress(OSError):
            if _http_get(url, timeout_s=2)[0] == 200:
                return
        time.sleep(0.25)
    raise LabError(f"{what} not ready within {timeout_s:.0f} s ({url}):\n{_tail(log)}")


def service_config(sc: Scenario, name: str, work: Path, otlp: str, containers: bool = True) -> dict[str, Any]:
    topo = sc.topology
    s = topo.service(name)
    calls = []
    for c in s.calls:
        callee = topo.service(c.service)
        addr = topo.address(callee.name)
        calls.append(
            {
                "service": callee.name,
                "route": c.route,
                "address": addr,
                "port": callee.port,
                "url": f"http://{addr}:{callee.port}{c.route}",
                "keys": c.keys,
                "candidates": c.candidates,
                "dim": int(callee.param("dim", 256)),
            }
        )
    return {
        "name": s.name,
        "role": s.role,
        "address": topo.address(s.name),
        "port": s.port,
        "metrics_port": s.metrics_port,
        "host_name": f"{s.name}-node",
        "otlp": otlp,
        "work": str(work),
        "seed": sc.seed,
        "containers": containers,  # runs inside its cgroup (testbed/lab/cgroups.py): a cache may watch its limit
        "params": dict(s.params),
        "calls": calls,
    }


# -- faults --------------------------------------------------------------------------------------


def _inside(groups: Cgroups | None, service: str, cmd: list[str]) -> list[str]:
    return groups.enter(service, cmd) if groups is not None else cmd


class Faults:
    def __init__(self, net: Network, groups: Cgroups | None) -> None:
        self.net = net
        self.groups = groups
        self.active: dict[str, Fault] = {}

    def apply(self, f: Fault) -> str | None:
        """Apply one fault; what it set, when that is only known now (a memory limit), as a line."""
        note = None
        if f.kind == "bandwidth":
            self.net.shape(f.service, f.setting("rate"), f.setting("burst"), f.setting("latency"))
        elif self.groups is None:
            raise LabError(f"{f.name}: a {f.kind} fault needs the lab's cgroup v1 containers")
        elif f.kind == "cpu":
            self.groups.set_cpu_quota(f.service, float(f.setting("cpus")))
        else:
            limit = self.groups.set_memory_headroom(f.service, int(f.setting("headroom_mb")) << 20)
            note = f"{f.name}: memory.limit_in_bytes of {f.service} set to {limit / 2**20:.0f} MiB"
        self.active[f.name] = f
        return note

    def remove(self, f: Fault) -> None:
        if f.kind == "bandwidth":
            self.net.unshape(f.service)
        elif self.groups is None:
            pass
        elif f.kind == "cpu":
            self.groups.clear_cpu_quota(f.service)
        else:
            self.groups.clear_memory_limit(f.service)
        self.active.pop(f.name, None)

    def clear(self) -> None:
        for f in list(self.active.values()):
            with contextlib.suppress(Exception):  # teardown continues whatever one fault says
                self.remove(f)


# -- load ------------------------------------------------------------------------------------------


class Load:
    """Open-loop Poisson arrivals at each phase's rate; latency counted from the arrival's due time."""

    def __init__(self, url: str, seed: int, workers: int = 64) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.client = httpx.Client(timeout=10.0, limits=httpx.Limits(max_connections=workers))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lab-load")
        self.lock = threading.Lock()
        self.results: list[tuple[str, float, int]] = []  # phase, latency_s, status (0: transport error)

    def _one(self, phase: str, due: float) -> None:
        try:
            code = self.client.get(self.url).status_code
        except httpx.HTTPError:
            code = 0
        with self.lock:
            self.results.append((phase, time.monotonic() - due, code))

    def run_phase(self, phase: Phase, stop: threading.Event, align: bool = False) -> None:
        """Send the phase's arrivals for its seconds; ``align``: and on to the next whole minute of the clock
        (the next phase's fault then starts on a minute boundary: hop_minutes' grain)."""
        seconds = phase.seconds
        if align:
            now = time.time()
            seconds = math.ceil((now + seconds) / 60) * 60 - now
        end = time.monotonic() + seconds
        due = time.monotonic()
        while not stop.is_set():
            due += self.rng.expovariate(phase.rps)
            if due >= end:
                break
            wait = due - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            self.pool.submit(self._one, phase.name, due)
        left = end - time.monotonic()
        if left > 0:
            stop.wait(left)

    def stats(
        self, phase: str, threshold_ms: float
    ) -> tuple[int, int, float | None, float | None, float | None]:
        with self.lock:
            rows = [(lat, code) for p, lat, code in self.results if p == phase]
        lat = sorted(x * 1000 for x, _ in rows)
        if not lat:
            return 0, 0, None, None, None
        errors = sum(1 for _, c in rows if c == 0 or c >= 500)
        p50, p99 = (round(lat[min(len(lat) - 1, int(q * (len(lat) - 1)))], 1) for q in (0.5, 0.99))
        over = sum(1 for x in lat if x > threshold_ms) / len(lat)
        return len(lat), errors, p50, p99, round(over, 4)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)
        self.client.close()


# -- diagnosis -------------------------------------------------------------------------------------


def hopscope_json(*args: str) -> Any:
    """`hopscope ARGS --json` in a child process (as a user runs it), parsed."""
    return json.loads(hopscope_text(*args, "--json"))


def hopscope_text(*args: str) -> str:
    """`hopscope ARGS` in a child process (as a user runs it): its standard output."""
    p = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", *args],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")},
    )
    if p.returncode != 0:
        raise LabError(f"hopscope {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p.stdout


def _ts(x: str) -> datetime:
    return datetime.fromisoformat(x.replace("Z", "")).replace(tzinfo=None)


def judge(
    events: list[dict[str, Any]], incidents: list[dict[str, Any]], explain: Callable[[str], dict[str, Any]]
) -> list[Outcome]:
    """Each truth event against the incidents that overlap it (pure but for ``explain``).

    A fault is right when its (hop, dimension) is among the first k causes, k the number of faults
    expected to breach in the same window (1 for one fault: the top cause; 2 for two at once); a
    control is right when nothing breached.
    """
    out = []
    for ev in events:
        at_once = sum(
            1
            for o in events
            if o["expect_breach"] and _ts(o["start"]) < _ts(ev["end"]) and _ts(o["end"]) > _ts(ev["start"])
        )
        start, end = _ts(ev["start"]), _ts(ev["end"])
        hits = [
            i for i in incidents if _ts(i["start"]) < end + timedelta(minutes=3) and _ts(i["end"]) > start
        ]
        expected = f"{ev['hop']} ({ev['dimension']})" if ev.get("hop") else None
        top = kind = verdict = inc_id = None
        share = added = residual = first = rank = None
        named: list[str] = []
        if hits:
            first_inc = min(hits, key=lambda i: _ts(i["start"]))
            inc_id, verdict = first_inc["id"], first_inc["verdict"]
            # The earliest a per-minute evaluator can page: the end of the breach's first minute.
            first = (_ts(first_inc["start"]) + timedelta(minutes=1) - start).total_seconds()
            causes = first_inc.get("causes") or []
            named = [f"{c['hop']} ({c['dimension']})" for h in hits for c in h.get("causes") or []]
            if causes:
                top = f"{causes[0]['hop']} ({causes[0]['dimension']})"
                kind = causes[0].get("hop_kind")
                ranked = [f"{c['hop']} ({c['dimension']})" for c in causes]
                rank = ranked.index(expected) + 1 if expected in ranked else None
            d = explain(inc_id).get("decomposition") or {}
            e2e = d.get("end_to_end") or {}
            if e2e.get("incident_mean_ms") is not None and e2e.get("baseline_mean_ms") is not None:
                added = float(e2e["incident_mean_ms"]) - float(e2e["baseline_mean_ms"])
                residual = d.get("residual_ms")
                if residual is not None and added > 0:
                    share = round(1 - float(residual) / added, 4)
        breached = bool(hits)
        if ev["expect_breach"]:
            correct = breached and rank is not None and rank <= max(1, at_once)
        else:
            correct = not breached
        out.append(
            Outcome(
                event=ev["name"],
                expect_breach=bool(ev["expect_breach"]),
                expected=expected,
                breached=breached,
                incidents=len(hits),
                top=top,
                top_hop_kind=kind,
                verdict=verdict,
                correct=correct,
                share_explained=share,
                added_mean_ms=None if added is None else round(added, 2),
                residual_ms=None if residual is None else round(float(residual), 2),
                first_alert_s=first,
                incident_id=inc_id,
                rank=rank,
                at_once=max(1, at_once),
                causes=named,
            )
        )
    return out


def truth_events(sc: Scenario, phases: list[PhaseStats]) -> list[dict[str, Any]]:
    """scenario.json's events (the demo's shape): each truth entry at the times its fault or phase ran."""
    events = []
    for key, t in sc.truth:
        ran = [p for p in phases if key in p.faults or p.name == key]
        if not ran:
            continue
        events.append(
            {
                "name": key,
                "title": sc.description,
                "start": ran[0].start,
                "end": ran[-1].end,
                "expect_breach": bool(t.get("expect_breach", "hop" in t)),
                "hop": t.get("hop"),
                "hop_kind": t.get("hop_kind"),
                "dimension": t.get("dimension"),
                "note": t.get("note"),
            }
        )
    return events


# -- the run ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a run like Ctrl-C does: through the finally blocks that clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_lab(
    sc: Scenario, keep: Path | None = None, progress: Callable[[str], None] | None = say_stderr
) -> LabResult:
    """Run ``sc`` as the module docstring describes; LabError when the lab itself cannot run."""
    say = progress or (lambda _line: None)
    check_requirements(sc=sc)
    topo = sc.topology
    t_start = time.monotonic()
    with lab_lock(), _sigterm_as_interrupt(), workdir(keep, "hopscope-lab-") as work:
        for gone in [*remove_stale(), *cgroups.remove_stale(PREFIX)]:
            say(f"lab: removed {gone}, left by a run that did not finish")
        net = Network(topo)
        procs = Procs()
        # containers where cgroup v1 is mounted; elsewhere (a cgroup v2 CI runner) the services run
        # without them and only the network faults are offered (check_requirements said so already)
        groups = Cgroups([s.name for s in topo.services], net.id) if cgroups.available() is None else None
        faults = Faults(net, groups)
        exporter: Exporter | None = None
        load: Load | None = None
        stop = threading.Event()
        try:
            say(
                f"lab: network: {len(topo.services)} namespaces + router ({net.id}), line rate {topo.port_rate}"
            )
            net.up()
            netem = net.netem_available()
            if not netem:
                say(
                    "lab: netem is not available in this kernel (no sch_netem): delay and loss faults are not offered"
                )
            if groups is not None:
                groups.create()
                exporter = Exporter(groups, "127.0.0.1", free_port())
                exporter.start()
                say(
                    f"lab: containers: a cgroup v1 group per service ({net.id}-*), exported at {exporter.url}"
                    + (
                        "; PSI from a group of each in the v2 hierarchy"
                        if groups.psi
                        else "; no PSI (no v2 hierarchy mounted beside v1)"
                    )
                )
            else:
                say(f"lab: containers: none ({cgroups.available()}): CPU and memory faults are not offered")
            target = exporter.url.split("/")[2] if exporter is not None else None
            prom_url = _start_telemetry(sc, net, work, procs, target)
            ports = {"otlp": free_port(), "metrics": free_port()}
            (work / "slo_rules").mkdir(exist_ok=True)
            write_rules(topo, work / "slo_rules")
            config = write_config(topo, work, ports, prom_url)
            env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
            env["PYTHONUNBUFFERED"] = "1"
            daemon_log = work / "daemon.log"
            daemon = procs.start(
                "daemon",
                [
                    sys.executable,
                    "-m",
                    "hopscope.cli",
                    "collect",
                    "--config",
                    str(config),
                    "--log-level",
                    "INFO",
                ],
                daemon_log,
                cwd=str(ROOT),
                env=env,
            )
            wait_http(
                "hopscope collect", f"http://127.0.0.1:{ports['metrics']}/metrics", daemon, daemon_log, 90
            )
            say(
                f"lab: telemetry: Prometheus {prom_url}, hopscope collect pid {daemon.pid}, store {work / 'store'}"
            )
            otlp = f"http://{topo.host_address}:{ports['otlp']}/v1/traces"
            svc_env = {**env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                       "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])}  # fmt: skip
            for s in reversed(topo.services):  # callees first
                log = work / f"{s.name}.log"
                cfg = json.dumps(service_config(sc, s.name, work, otlp, containers=groups is not None))
                proc = procs.start(
                    s.name,
                    _inside(
                        groups,
                        s.name,
                        [*net.ns_exec(s.name), sys.executable, "-m", "testbed.lab.service", cfg],
                    ),
                    log,
                    cwd=str(ROOT),
                    env=svc_env,
                )
                wait_http(s.name, f"http://{topo.address(s.name)}:{s.port}/health", proc, log, 60)
            say(f"lab: services: {', '.join(s.name for s in topo.services)} up")
            entry = topo.service(topo.entry_service)
            load = Load(f"http://{topo.address(entry.name)}:{entry.port}{topo.entry_route}", sc.seed)
            phases: list[PhaseStats] = []
            for k, ph in enumerate(sc.phases):
                nxt = sc.phases[k + 1] if k + 1 < len(sc.phases) else None
                align = nxt is not None and bool(nxt.faults) and nxt.faults != ph.faults
                for f in ph.faults:
                    note = faults.apply(sc.fault(f))
                    if note:
                        say(f"lab: {note}")
                t0 = time.time()
                what = (
                    f", faults: {', '.join(_fault_text(sc.fault(f)) for f in ph.faults)}" if ph.faults else ""
                )
                say(f"lab: phase {ph.name}: {ph.seconds:g} s at {ph.rps:g} req/s{what}")
                load.run_phase(ph, stop, align=align)
                for f in ph.faults:
                    if f in faults.active:
                        if sc.fault(f).kind == "bandwidth":
                            say(
                                f"lab: {f}: qdisc toward {sc.fault(f).service}: {_qdisc_text(net.qdisc(sc.fault(f).service))}"
                            )
                        faults.remove(sc.fault(f))
                phases.append(PhaseStats(ph.name, _utc(t0).isoformat(), _utc(time.time()).isoformat(), ph.rps,
                                         list(ph.faults)))  # fmt: skip
            load.close()
            for st in phases:
                st.requests, st.errors, st.p50_ms, st.p99_ms, st.over_threshold = load.stats(
                    st.name, topo.slo.threshold_ms
                )
                say(f"lab: {st.name}: {st.requests} requests, {st.errors} errors, p50 {st.p50_ms} ms, "
                    f"p99 {st.p99_ms} ms, over {topo.slo.threshold_ms:g} ms {_pct(st.over_threshold)}")  # fmt: skip
            for s in topo.services:  # SIGTERM: each flushes its queued spans before exiting
                procs.stop(s.name, grace_s=20)
            time.sleep(3)  # the last exports' commits
            code = procs.stop("daemon", grace_s=30)
            say(f"lab: stop: services flushed, hopscope collect exited {code}")
            rolled = _final_rollup(work / "store", topo, phases)
            events = truth_events(sc, phases)
            (work / "scenario.json").write_text(
                json.dumps(
                    {
                        "scenario": sc.name,
                        "scenario_file": str(sc.source),
                        "start": phases[0].start,
                        "end": phases[-1].end,
                        "route": topo.entry_route,
                        "thresholds_ms": [topo.slo.threshold_ms],
                        "slo": {"service": topo.entry_service, "route": topo.entry_route,
                                "threshold_ms": topo.slo.threshold_ms, "objective": topo.slo.objective},
                        "events": events,
                    },
                    indent=1,
                )
            )  # fmt: skip
            # --config: the lab's hopscope.toml holds its signals and container map ([diagnosis])
            store_args = [
                "--store",
                str(work / "store"),
                "--rules",
                str(work / "slo_rules"),
                "--config",
                str(config),
            ]
            incidents = hopscope_json("incidents", "--since", "1h", *store_args)
            explained: dict[str, dict[str, Any]] = {}

            def explain(inc: str) -> dict[str, Any]:
                explained[inc] = hopscope_json("explain", inc, *store_args)
                return explained[inc]

            outcomes = judge(events, incidents, explain)
            say(f"lab: diagnose: {rolled} hop_minutes rows, {len(incidents)} incident(s)")
            result = LabResult(
                scenario=sc.name,
                work=str(work) if keep is not None else None,
                seconds=round(time.monotonic() - t_start, 1),
                netem=netem,
                phases=phases,
                outcomes=outcomes,
                incidents=incidents,
                explain=next(iter(explained.values()), None),
            )
            if keep is not None:
                (work / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
                for inc in incidents:  # what a reader quotes: `hopscope explain` as text, each incident
                    (work / f"explain-{inc['id']}.txt").write_text(
                        hopscope_text("explain", inc["id"], *store_args)
                    )
            return result
        finally:
            stop.set()
            faults.clear()
            if load is not None:
                load.pool.shutdown(wait=False, cancel_futures=True)
            procs.stop_all()
            if exporter is not None:
                exporter.stop()
            errors = [*(groups.remove() if groups is not None else []), *net.down()]
            for e in errors:
                say(f"lab: cleanup: {e}")


def _qdisc_text(tc_show: str) -> str:
    """`tc -s qdisc show` -> 'sent N bytes, dropped D, overlimits O, backlog B'."""
    m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", tc_show)
    b = re.search(r"backlog (\S+)", tc_show)
    if not m:
        return tc_show.strip()
    return f"sent {int(m[1]):,} bytes, dropped {m[3]}, overlimits {m[4]}, backlog {b[1] if b else '-'}"


def _fault_text(f: Fault) -> str:
    if f.kind == "bandwidth":
        return f"{f.name} (tc tbf {f.setting('rate')} toward {f.service})"
    if f.kind == "cpu":
        return f"{f.name} (cgroup v1 cpu quota {f.setting('cpus')} CPU on {f.service})"
    return (
        f"{f.name} (cgroup v1 memory limit: {f.service}'s anonymous memory + {f.setting('headroom_mb')} MiB)"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _start_telemetry(sc: Scenario, net: Network, work: Path, procs: Procs, cgroups_target: str | None) -> str:
    """A node_exporter per namespace, and Prometheus on the host; returns Prometheus' URL."""
    topo = sc.topology
    collectors = ["--collector.disable-defaults", "--collector.netdev", "--collector.netstat",
                  "--collector.netclass", "--collector.meminfo"]  # fmt: skip
    where: list[tuple[str | None, str]] = [(s.name, topo.address(s.name)) for s in topo.services]
    where.append((None, topo.router_host_address))
    for svc, addr in where:
        name = f"node_exporter-{svc or 'router'}"
        extra = ["--collector.qdisc"] if svc is None else []  # the router holds the ports' qdiscs
        log = work / f"{name}.log"
        proc = procs.start(
            name,
            [*net.ns_exec(svc), "/usr/bin/prometheus-node-exporter", f"--web.listen-address={addr}:{NODE_PORT}",
             *collectors, *extra],
            log,
        )  # fmt: skip
        wait_http(name, f"http://{addr}:{NODE_PORT}/metrics", proc, log, 30)
    prom_cfg = work / "prometheus.yml"
    write_prometheus(topo, net, prom_cfg, cgroups_target)
    port = free_port()
    log = work / "prometheus.log"
    proc = procs.start(
        "prometheus",
        ["/usr/bin/prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={work / 'prometheus-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d"],
        log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http("prometheus", f"{url}/-/ready", proc, log, 60)
    return url


def _final_rollup(store_path: Path, topo: Topology, phases: list[PhaseStats]) -> int:
    """Roll up every minute of the run (the daemon leaves the last 2 minutes for late spans)."""
    from hopscope.rollup import rollup_range  # noqa: PLC0415 (the store's code, after the daemon stopped)
    from hopscope.store import Store  # noqa: PLC0415

    start = datetime.fromisoformat(phases[0].start) - timedelta(minutes=2)
    end = datetime.fromisoformat(phases[-1].end) + timedelta(minutes=2)
    store = Store.open(store_path)
    try:
        rollup_range(store, start, end, [topo.slo.threshold_ms])
        n = store.query("SELECT count(*) AS n FROM hop_minutes").to_pylist()[0]["n"]
        return int(n)
    finally:
        store.close()


def format_result(r: LabResult) -> str:
    lines = [f"scenario {r.scenario}: {r.seconds:.0f} s" + (f", kept in {r.work}" if r.work else "")]
    for p in r.phases:
        lines.append(
            f"  {p.name:<10} {p.requests:>5} req  p50 {p.p50_ms} ms  p99 {p.p99_ms} ms  "
            f"over threshold {_pct(p.over_threshold)}  errors {p.errors}" + (f"  [{', '.join(p.faults)}]" if p.faults else "")
        )  # fmt: skip
    for o in r.outcomes:
        mark = "OK " if o.correct else "BAD"
        if o.expect_breach:
            lines.append(f"{mark} {o.event}: truth {o.expected}; top cause {o.top or '-'} "
                         f"({o.verdict or 'no breach'})")  # fmt: skip
        else:
            lines.append(f"{mark} {o.event}: truth no breach; {o.incidents} incident(s)")
        if o.breached:
            share = "-" if o.share_explained is None else f"{o.share_explained:.0%}"
            first = "-" if o.first_alert_s is None else f"{o.first_alert_s:+.0f} s"
            lines.append(
                f"    incident {o.incident_id}: added mean {o.added_mean_ms} ms, residual {o.residual_ms} ms, "
                f"share explained by hops {share}; first alert {first} after the fault's start"
            )
    if not r.netem:
        lines.append("netem: not available in this kernel (no sch_netem); delay and loss faults not offered")
    return "\n".join(lines)
