"""The lab's containers: one cgroup v1 group per service (cpu, cpuacct, memory), its faults, and a
cAdvisor-shaped exposition of its counters.

    groups = Cgroups(["api-gateway", "model-server"], tag="hsl123")
    groups.create()
    cmd = groups.enter("model-server", ["ip", "netns", "exec", ...])   # the process starts inside it
    groups.set_cpu_quota("model-server", 0.1)     # cpu.cfs_quota_us = 10000 per 100000 us
    groups.set_memory_headroom("feature-store", 24 << 20)   # limit = its anonymous + kernel memory + 24 MiB
    text = groups.exposition()                    # container_cpu_cfs_throttled_seconds_total{container=...} ...
    groups.remove()

Every service runs in its group from its first instruction, as a container would (its feature file's
page cache is charged to it); a fault changes a limit of a group that was there all along, so the
counters are continuous series with a clean baseline. The exposition uses cAdvisor's metric names
and definitions (working set = usage - inactive file pages; an unlimited group's limit is 0) with
``container="lab-<service>"``: hopscope learns which service a container is from the lab's
``[[diagnosis.map]]`` entries, as a user would write them. The limits are cgroup v1's: this machine
mounts the cpu, cpuacct and memory controllers as v1 (`/sys/fs/cgroup/{cpu,cpuacct,memory}`); the lab
says so when they are not there. Where the hybrid layout also mounts the v2 hierarchy with no controller
(`/sys/fs/cgroup/unified`), each service gets a group there too, for its pressure stall information
alone (PSI is kept per v2 group whatever controllers it has): ``cpu.pressure``, ``memory.pressure`` and
``io.pressure`` become cAdvisor's ``container_pressure_*_{waiting,stalled}_seconds_total`` ("some" and
"full" stall time). Without it the lab runs on and exports no pressure series.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "cpuacct", "memory")
UNIFIED = "unified"  # the hybrid layout's v2 hierarchy (no controllers): its groups keep PSI
PSI_RESOURCES = ("cpu", "memory", "io")
PERIOD_US = 100_000
CONTAINER_PREFIX = "lab-"  # the container label of service S is lab-S (not S: the map is what links them)


class CgroupError(RuntimeError):
    """A cgroup the lab needs is not there or cannot be changed."""


def container_name(service: str) -> str:
    return f"{CONTAINER_PREFIX}{service}"


def available(root: Path = ROOT) -> str | None:
    """None when cgroup v1 cpu, cpuacct and memory controllers are mounted; else why not."""
    missing = [c for c in CONTROLLERS if not (root / c / "cgroup.procs").exists()]
    if missing:
        return f"no cgroup v1 {', '.join(missing)} controller under {root} (the lab's containers need them)"
    return None


def psi_available(root: Path = ROOT) -> bool:
    """The v2 hierarchy of a hybrid layout is mounted and keeps pressure stall information."""
    return (root / UNIFIED / "cgroup.procs").exists() and (root / UNIFIED / "cpu.pressure").exists()


def _pressure(path: Path) -> dict[str, float]:
    """``some``/``full`` stall time in seconds from a ``*.pressure`` file (its ``total=`` is in us)."""
    out: dict[str, float] = {}
    for line in _read(path).splitlines():
        kind, _, rest = line.partition(" ")
        for field in rest.split():
            key, _, value = field.partition("=")
            if key == "total":
                with contextlib.suppress(ValueError):
                    out[kind] = int(value) / 1e6
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _stat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _int(path: Path) -> int | None:
    try:
        return int(_read(path).strip())
    except ValueError:
        return None


class Cgroups:
    """One group per service under each controller, named ``<tag>-<service>``."""

    def __init__(
        self, services: Iterable[str], tag: str, root: Path = ROOT, parents: dict[str, str] | None = None
    ) -> None:
        self.services = list(services)
        self.tag = tag
        self.root = root
        # beneath the lab's own group of each controller: whatever limits it runs under still hold
        self.parents = {c: own_group(c) for c in CONTROLLERS} if parents is None else dict(parents)
        self.psi = psi_available(root)
        if self.psi and UNIFIED not in self.parents:
            self.parents[UNIFIED] = own_group(UNIFIED)

    @property
    def hierarchies(self) -> tuple[str, ...]:
        """Where each service has a group: the v1 controllers, and the v2 hierarchy when it keeps PSI."""
        return (*CONTROLLERS, UNIFIED) if self.psi else CONTROLLERS

    def path(self, controller: str, service: str) -> Path:
        return self.root / controller / self.parents.get(controller, "") / f"{self.tag}-{service}"

    def create(self) -> None:
        why = available(self.root)
        if why:
            raise CgroupError(why)
        for s in self.services:
            for c in self.hierarchies:
                self.path(c, s).mkdir(exist_ok=True)

    def enter(self, service: str, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run inside the service's groups from its start (the shell joins them, then execs)."""
        joins = "; ".join(f"echo $$ > {self.path(c, service) / 'cgroup.procs'}" for c in self.hierarchies)
        return ["sh", "-c", f'{joins} && exec "$@"', "sh", *cmd]

    # -- faults ------------------------------------------------------------------------------------

    def set_cpu_quota(self, service: str, cpus: float) -> None:
        p = self.path("cpu", service)
        (p / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (p / "cpu.cfs_quota_us").write_text(str(max(1000, int(cpus * PERIOD_US))))

    def clear_cpu_quota(self, service: str) -> None:
        (self.path("cpu", service) / "cpu.cfs_quota_us").write_text("-1")

    def set_memory_headroom(self, service: str, headroom_bytes: int) -> int:
        """memory.limit_in_bytes = the group's anonymous + kernel memory now + ``headroom_bytes``: its
        page cache (the feature file) must then fit in the headroom. Returns the limit set."""
        p = self.path("memory", service)
        st = _stat(p / "memory.stat")
        kmem = _int(p / "memory.kmem.usage_in_bytes") or 0
        limit = st.get("total_rss", st.get("rss", 0)) + kmem + headroom_bytes
        try:
            (p / "memory.limit_in_bytes").write_text(str(limit))
        except OSError as exc:  # EBUSY: usage could not be reclaimed below it
            raise CgroupError(f"{p}: memory.limit_in_bytes {limit}: {exc}") from exc
        return limit

    def clear_memory_limit(self, service: str) -> None:
        (self.path("memory", service) / "memory.limit_in_bytes").write_text("-1")

    # -- what cAdvisor would export ------------------------------------------------------------------

    def exposition(self) -> str:
        """Prometheus text of every group, in cAdvisor's names and definitions."""
        fams: dict[str, tuple[str, list[str]]] = {
            "container_cpu_usage_seconds_total": ("counter", []),
            "container_cpu_cfs_periods_total": ("counter", []),
            "container_cpu_cfs_throttled_periods_total": ("counter", []),
            "container_cpu_cfs_throttled_seconds_total": ("counter", []),
            "container_memory_usage_bytes": ("gauge", []),
            "container_memory_working_set_bytes": ("gauge", []),
            "container_spec_memory_limit_bytes": ("gauge", []),
            "container_memory_failcnt": ("counter", []),
            "container_memory_failures_total": ("counter", []),
        }
        for res in PSI_RESOURCES:
            for kind in ("waiting", "stalled"):
                fams[f"container_pressure_{res}_{kind}_seconds_total"] = ("counter", [])

        def put(name: str, labels: str, value: float) -> None:
            fams[name][1].append(f"{name}{{{labels}}} {value:.9g}")

        for s in self.services:
            labels = f'container="{container_name(s)}",id="/{self.tag}-{s}"'
            usage_ns = _int(self.path("cpuacct", s) / "cpuacct.usage")
            if usage_ns is not None:
                put("container_cpu_usage_seconds_total", labels, usage_ns / 1e9)
            cpu = _stat(self.path("cpu", s) / "cpu.stat")
            if cpu:
                put("container_cpu_cfs_periods_total", labels, cpu.get("nr_periods", 0))
                put("container_cpu_cfs_throttled_periods_total", labels, cpu.get("nr_throttled", 0))
                put("container_cpu_cfs_throttled_seconds_total", labels, cpu.get("throttled_time", 0) / 1e9)
            if self.psi:
                for res in PSI_RESOURCES:
                    stall = _pressure(self.path(UNIFIED, s) / f"{res}.pressure")
                    for kind, key in (("waiting", "some"), ("stalled", "full")):
                        if key in stall:
                            put(f"container_pressure_{res}_{kind}_seconds_total", labels, stall[key])
            mem = self.path("memory", s)
            usage = _int(mem / "memory.usage_in_bytes")
            if usage is None:
                continue
            st = _stat(mem / "memory.stat")
            limit = _int(mem / "memory.limit_in_bytes") or 0
            put("container_memory_usage_bytes", labels, usage)
            put(
                "container_memory_working_set_bytes", labels, max(0, usage - st.get("total_inactive_file", 0))
            )
            put("container_spec_memory_limit_bytes", labels, 0 if limit >= 1 << 62 else limit)  # 0: unlimited
            put("container_memory_failcnt", labels, _int(mem / "memory.failcnt") or 0)
            for kind, key in (("pgfault", "total_pgfault"), ("pgmajfault", "total_pgmajfault")):
                put("container_memory_failures_total", f'{labels},failure_type="{kind}",scope="container"',
                    st.get(key, 0))  # fmt: skip
        out = []
        for name, (kind, lines) in fams.items():
            if lines:
                out += [f"# TYPE {name} {kind}", *lines]
        return "\n".join(out) + "\n"

    # -- teardown ------------------------------------------------------------------------------------

    def remove(self) -> list[str]:
        """Move any process left back to the root groups and delete the groups; the errors, as text."""
        errors = []
        for s in self.services:
            for c in self.hierarchies:
                err = _remove_group(self.path(c, s))
                if err:
                    errors.append(err)
        return errors


def _remove_group(p: Path) -> str | None:
    if not p.exists():
        return None
    for pid in _read(p / "cgroup.procs").split():
        with contextlib.suppress(OSError):
            (p.parent / "cgroup.procs").write_text(pid)
    with contextlib.suppress(OSError):
        (p / "memory.limit_in_bytes").write_text("-1")
    try:
        p.rmdir()
    except OSError as exc:
        return f"{p}: {exc}"
    return None


def own_group(controller: str, pid: int | str = "self") -> str:
    """The group (relative path) a process is in for one cgroup v1 controller, or for ``UNIFIED`` in
    the v2 hierarchy; "" for the root."""
    for line in _read(Path(f"/proc/{pid}/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == UNIFIED and controllers == ""):
            return path.strip().lstrip("/")
    return ""


def remove_stale(prefix: str, root: Path = ROOT) -> list[str]:
    """Delete the groups of labs whose process is gone (``<prefix><pid>-...``); returns what went."""
    gone = []
    for c in (*CONTROLLERS, UNIFIED):
        base = root / c / own_group(c)
        if not base.is_dir():
            continue
        for p in base.iterdir():
            m = re.match(rf"^{prefix}(\d+)-", p.name)
            if m and p.is_dir() and not Path(f"/proc/{m.group(1)}").exists() and _remove_group(p) is None:
                gone.append(str(p))
    return gone


class Exporter:
    """The groups' exposition over HTTP (GET /metrics), on a thread, as cAdvisor serves it."""

    def __init__(self, groups: Cgroups, host: str, port: int) -> None:
        text = groups.exposition

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="lab-cgroups", daemon=True)
        self.url = f"http://{host}:{port}/metrics"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def memory_cgroup_of(pid: int | str = "self") -> Path | None:
    """The memory group a process is in (cgroup v1), from /proc/<pid>/cgroup."""
    path = ROOT / "memory" / own_group("memory", pid)
    return path if (path / "memory.usage_in_bytes").exists() else None


__all__ = [
    "CgroupError",
    "Cgroups",
    "Exporter",
    "available",
    "container_name",
    "memory_cgroup_of",
    "psi_available",
    "remove_stale",
]
