"""Host NICs and TCP retransmits from /proc and /sys, under node_exporter names.

Counters stay cumulative (`*_total`, `node_netstat_Tcp_RetransSegs`); rates are
computed at query time. Link speed is `node_network_speed_bytes` (Mb/s x 125000).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hopscope.collectors.records import Sample, TargetResult
from hopscope.config.collect import NetworkConfig
from hopscope.store import utcnow

SOURCE = "network"

# /proc/net/dev columns after the interface name, in order, and the ones we keep.
_DEV_FIELDS = (
    ("receive", "bytes"),
    ("receive", "packets"),
    ("receive", "errs"),
    ("receive", "drop"),
    ("receive", "fifo"),
    ("receive", "frame"),
    ("receive", "compressed"),
    ("receive", "multicast"),
    ("transmit", "bytes"),
    ("transmit", "packets"),
    ("transmit", "errs"),
    ("transmit", "drop"),
    ("transmit", "fifo"),
    ("transmit", "colls"),
    ("transmit", "carrier"),
    ("transmit", "compressed"),
)
_KEEP = {"bytes", "packets", "errs", "drop"}


@dataclass(frozen=True, slots=True)
class NicCounters:
    device: str
    counters: dict[str, int]  # node_exporter metric name -> value


def parse_net_dev(text: str) -> list[NicCounters]:
    """/proc/net/dev -> counters per interface (node_exporter names)."""
    out = []
    for line in text.splitlines()[2:]:
        if ":" not in line:
            continue
        name, _, rest = line.partition(":")
        values = rest.split()
        if len(values) < len(_DEV_FIELDS):
            continue
        counters = {
            f"node_network_{direction}_{what}_total": int(v)
            for (direction, what), v in zip(_DEV_FIELDS, values, strict=False)
            if what in _KEEP
        }
        out.append(NicCounters(name.strip(), counters))
    return out


def parse_snmp_retrans(text: str) -> int | None:
    """/proc/net/snmp -> Tcp RetransSegs (the header line names the columns of the value line)."""
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("Tcp:")]
    if len(lines) < 2:
        return None
    header, values = lines[0], lines[1]
    try:
        return int(values[header.index("RetransSegs")])
    except (ValueError, IndexError):
        return None


class NetworkCollector:
    """Reads /proc/net/dev, /sys/class/net/*/speed and /proc/net/snmp; one TargetResult per NIC, one for TCP."""

    name = "network"

    def __init__(
        self,
        cfg: NetworkConfig | None = None,
        *,
        host: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.cfg = cfg or NetworkConfig()
        self.interval_s = self.cfg.interval_s
        self.host = host
        self._clock = clock
        self._proc = Path(self.cfg.proc_path)
        self._sys = Path(self.cfg.sys_path)

    @property
    def targets_text(self) -> str:
        return f"{self._proc}/net/dev, {self._proc}/net/snmp"

    def available(self) -> str | None:
        """None if /proc/net/dev can be read, else why not."""
        try:
            (self._proc / "net" / "dev").read_text()
        except OSError as exc:
            return f"cannot read {self._proc / 'net' / 'dev'}: {exc.strerror or exc}"
        return None

    def _wanted(self, device: str) -> bool:
        if self.cfg.devices:
            return device in self.cfg.devices
        return device not in self.cfg.exclude

    def _speed_bytes(self, device: str) -> float | None:
        try:
            mbps = int((self._sys / "class" / "net" / device / "speed").read_text().strip())
        except (OSError, ValueError):
            return None  # virtual NICs and links that are down have no speed (EINVAL or -1)
        return mbps * 125_000.0 if mbps > 0 else None

    def collect(self) -> Iterable[TargetResult]:
        now = self._clock()
        results: list[TargetResult] = []
        try:
            nics = parse_net_dev((self._proc / "net" / "dev").read_text())
        except OSError as exc:
            results.append(
                TargetResult("net/dev", False, error=f"cannot read {self._proc / 'net' / 'dev'}: {exc}")
            )
            nics = []
        for nic in nics:
            if not self._wanted(nic.device):
                continue
            labels = {"device": nic.device}
            samples = [
                Sample(now, m, float(v), SOURCE, self.cfg.service, self.host, labels)
                for m, v in nic.counters.items()
            ]
            speed = self._speed_bytes(nic.device)
            if speed is not None:
                samples.append(
                    Sample(
                        now, "node_network_speed_bytes", speed, SOURCE, self.cfg.service, self.host, labels
                    )
                )
            results.append(TargetResult(nic.device, True, tuple(samples)))
        try:
            retrans = parse_snmp_retrans((self._proc / "net" / "snmp").read_text())
        except OSError as exc:
            results.append(
                TargetResult("tcp", False, error=f"cannot read {self._proc / 'net' / 'snmp'}: {exc}")
            )
        else:
            if retrans is None:
                results.append(
                    TargetResult(
                        "tcp", False, error=f"{self._proc / 'net' / 'snmp'}: no Tcp RetransSegs column"
                    )
                )
            else:
                sample = Sample(
                    now,
                    "node_netstat_Tcp_RetransSegs",
                    float(retrans),
                    SOURCE,
                    self.cfg.service,
                    self.host,
                    {},
                )
                results.append(TargetResult("tcp", True, (sample,)))
        return results
