"""The lab's network: one namespace per service, a router namespace between them, real kernel faults.

    host --veth-- router --veth p1-- service 1 (eth0)
                         --veth p2-- service 2 (eth0) ...

Forwarding is switched on inside the router namespace only, so the host's own sysctls stay as they
are; the host gets one route to the lab's subnet through the router. Every router port carries a tc
tbf at the topology's line rate from the start, so a bandwidth fault changes the rate of a qdisc
that was there all along (node_exporter's qdisc collector then shows one continuous series).
Deleting the namespaces deletes their veths, their qdiscs and the host's route with them.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from testbed.lab.scenario import Topology

PREFIX = "hsl"  # every namespace and host link the lab makes starts with this (and the owner's pid)
LOCK = Path("/run/hopscope-lab.lock")
Runner = Callable[[Sequence[str]], str]


class NetError(RuntimeError):
    """A command that builds or changes the lab's network failed."""


def run_cmd(cmd: Sequence[str]) -> str:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise NetError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def netns_list(run: Runner = run_cmd) -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]


def stale_namespaces(run: Runner = run_cmd) -> list[str]:
    """Lab namespaces whose owner process is gone (a run killed before its cleanup)."""
    out = []
    for ns in netns_list(run):
        m = re.match(rf"^{PREFIX}(\d+)-", ns)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            out.append(ns)
    return out


@contextlib.contextmanager
def lab_lock(path: Path = LOCK) -> Iterator[None]:
    """One lab at a time on a machine: the subnet and the namespace names are the machine's."""
    import fcntl  # noqa: PLC0415 (POSIX only; the lab runs only on Linux)

    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NetError(f"another lab holds {path}; wait for it to end") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Network:
    """Build, fault and tear down the lab's namespaces and links for one topology."""

    def __init__(self, topo: Topology, owner: int | None = None, run: Runner = run_cmd) -> None:
        self.topo = topo
        self.id = f"{PREFIX}{owner if owner is not None else os.getpid()}"
        self.run = run
        self.router = f"{self.id}-r"
        self.host_link = f"{self.id}h"
        self.namespaces: dict[str, str] = {s.name: f"{self.id}-{i}" for i, s in enumerate(topo.services, 1)}
        self.ports: dict[str, str] = {s.name: f"p{i}" for i, s in enumerate(topo.services, 1)}
        self.made: list[str] = []  # namespaces created, for down()

    def ns_exec(self, service: str | None) -> list[str]:
        """The command prefix that runs inside a service's namespace (None: the router's)."""
        return ["ip", "netns", "exec", self.router if service is None else self.namespaces[service]]

    def _ns(self, name: str) -> None:
        self.run(["ip", "netns", "add", name])
        self.made.append(name)
        self.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])

    def _in(self, ns: str, *cmd: str) -> str:
        return self.run(["ip", "netns", "exec", ns, *cmd])

    def up(self) -> None:
        topo = self.topo
        prefix = topo.subnet.prefixlen
        self._ns(self.router)
        self._in(self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        peer = f"{self.id}x"
        self.run(["ip", "link", "add", self.host_link, "type", "veth", "peer", "name", peer])
        self.run(["ip", "link", "set", peer, "netns", self.router])
        self._in(self.router, "ip", "link", "set", peer, "name", "host")
        self.run(["ip", "addr", "add", f"{topo.host_address}/24", "dev", self.host_link])
        self.run(["ip", "link", "set", self.host_link, "up"])
        self._in(self.router, "ip", "addr", "add", f"{topo.router_host_address}/24", "dev", "host")
        self._in(self.router, "ip", "link", "set", "host", "up")
        self.run(["ip", "route", "add", f"{topo.subnet.network_address}/{prefix}", "via",
                  topo.router_host_address, "dev", self.host_link])  # fmt: skip
        for i, s in enumerate(topo.services, 1):
            ns = self.namespaces[s.name]
            self._ns(ns)
            a, b = f"{self.id}a{i}", f"{self.id}b{i}"
            self.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            self.run(["ip", "link", "set", a, "netns", self.router])
            self.run(["ip", "link", "set", b, "netns", ns])
            port = self.ports[s.name]
            self._in(self.router, "ip", "link", "set", a, "name", port)
            self._in(ns, "ip", "link", "set", b, "name", "eth0")
            self._in(self.router, "ip", "addr", "add", f"{topo.router_address(i)}/24", "dev", port)
            self._in(ns, "ip", "addr", "add", f"{topo.address(s.name)}/24", "dev", "eth0")
            self._in(self.router, "ip", "link", "set", port, "up")
            self._in(ns, "ip", "link", "set", "eth0", "up")
            self._in(ns, "ip", "route", "add", "default", "via", topo.router_address(i))
            self.shape(s.name, topo.port_rate, "1mb", "50ms", add=True)

    def shape(self, service: str, rate: str, burst: str, latency: str, *, add: bool = False) -> None:
        """tc tbf on the router's port toward ``service``: what reaches the service is limited to ``rate``."""
        verb = "add" if add else "change"
        self._in(self.router, "tc", "qdisc", verb, "dev", self.ports[service], "root", "tbf",
                 "rate", rate, "burst", burst, "latency", latency)  # fmt: skip

    def unshape(self, service: str) -> None:
        """Back to the line rate."""
        self.shape(service, self.topo.port_rate, "1mb", "50ms")

    def qdisc(self, service: str) -> str:
        return self._in(self.router, "tc", "-s", "qdisc", "show", "dev", self.ports[service])

    def netem_available(self) -> bool:
        """Whether this kernel has sch_netem (delay and loss faults), tried on a throwaway dummy link."""
        try:
            self._in(self.router, "ip", "link", "add", "netemtry", "type", "dummy")
        except NetError:
            return False
        try:
            self._in(self.router, "tc", "qdisc", "add", "dev", "netemtry", "root", "netem", "delay", "1ms")
            return True
        except NetError:
            return False
        finally:
            with contextlib.suppress(NetError):
                self._in(self.router, "ip", "link", "del", "netemtry")

    def down(self) -> list[str]:
        """Delete everything up() made (and what a half-done up() left); returns the errors, if any."""
        errors = []
        for ns in reversed(self.made):
            try:
                self.run(["ip", "netns", "del", ns])
            except NetError as exc:  # "No such file": already gone (deleted by hand, or by remove_stale)
                if "No such file" not in str(exc):
                    errors.append(str(exc))
        self.made.clear()
        links = self.run(["ip", "-o", "link", "show"])
        for name in re.findall(rf"^\d+: ({re.escape(self.id)}[a-z0-9]+)[@:]", links, re.M):
            try:
                self.run(["ip", "link", "del", name])
            except NetError as exc:  # gone with its peer's namespace meanwhile: nothing left to do
                if "Cannot find device" not in str(exc):
                    errors.append(str(exc))
        return errors


def remove_stale(run: Runner = run_cmd) -> list[str]:
    """Delete the namespaces (and host links) of labs whose process is gone; returns what was removed."""
    gone = stale_namespaces(run)
    for ns in gone:
        run(["ip", "netns", "del", ns])
    links = run(["ip", "-o", "link", "show"])
    for name, pid in re.findall(rf"^\d+: ({PREFIX}(\d+)[a-z0-9]+)[@:]", links, re.M):
        if not Path(f"/proc/{pid}").exists():
            run(["ip", "link", "del", name])
            gone.append(name)
    return gone
