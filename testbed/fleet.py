"""Several `hopscope collect` processes on one shared store (PostgreSQL catalog + S3 data), a leader killed.

What it does, all on 127.0.0.1 (the caller brings the PostgreSQL database and the bucket: a Backend):

* takes the store's leader lease itself first (hopscope/leader.py), so no collector rolls up yet;
* starts N `hopscope collect` processes on the store (OTLP/HTTP, host network samples, rollups every
  second with a short grace, maintenance every few seconds, a lease of a few seconds);
* sends a backfill (traces stamped two minutes ago) and then live traffic to every collector: three
  services, each a real OpenTelemetry SDK TracerProvider with a BatchSpanProcessor and the OTLP/HTTP
  exporter, counted per batch acknowledged (testbed/soak.py's clients);
* while a watcher scrapes every collector's /metrics (hopscope_leader) and reads the store;
* gives the lease up a few seconds after a minute boundary: one collector leads and rolls up; kills it
  with SIGKILL once it has moved the rollup watermark; waits for another to lead and to roll up the
  next minute; optionally sends traffic on for `seconds`; stops the clients and the collectors (SIGTERM);
* audits the store: every acknowledged span once, hop_minutes equal to one rollup of the stored spans
  over every minute below the final watermark, each (minute, edge, route) once.

    result = run_fleet(FleetConfig(work=tmp), backend)
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopscope.leader import LeaseLeader
from hopscope.rollup import WATERMARK_KEY, rollup_spans
from hopscope.store import Backend, Store
from testbed.soak import (
    HOST,
    Scrape,
    Services,
    SoakConfig,
    _http_get,
    _kill_group,
    _spawn,
    _tail,
    _wait_until,
    free_port,
)
from testbed.workdir import say_stderr

ROOT = Path(__file__).resolve().parents[1]
_LEADS = re.compile(r"leader: (\S+) now leads \(term (\d+)\)")


@dataclass
class FleetConfig:
    work: Path
    collectors: int = 3
    spans_per_second: float = 60.0  # per collector
    seconds: float = 0.0  # live traffic at least this long (0: until the new leader has rolled a minute)
    lease_s: float = 3.0
    rollup_grace_s: float = 10.0
    rollup_interval_s: float = 1.0
    maintain_interval_s: float = 5.0
    backfill_traces: int = 60  # per collector, stamped two minutes ago
    kill_leader: bool = True


@dataclass
class FleetResult:
    collectors: int
    traffic_s: float = 0.0
    acknowledged: int = 0
    failed: int = 0
    stored: int = 0
    duplicates: int = 0
    acked_missing: int = 0
    hop_minutes_rows: int = 0
    hop_minutes_keys_repeated: int = 0
    hop_minutes_equal_to_one_rollup: bool = False
    minutes_rolled: int = 0
    first_watermark: str | None = None
    final_watermark: str | None = None
    first_leader: int | None = None
    next_leader: int | None = None
    takeover_s: float | None = None  # SIGKILL of the leader -> another one reports hopscope_leader 1
    most_leaders_at_once: int = 0
    # a collector's last rollup moved between two scrapes that both saw it stand by
    rollups_while_standing_by: int = 0
    conflict_retries: int = 0  # commits retried after a DuckLake conflict, all collectors (last scrape each)
    scrapes: int = 0
    reads: int = 0
    read_errors: list[str] = field(default_factory=list)
    terms: list[tuple[int, str]] = field(default_factory=list)  # (term, holder) from the collectors' logs
    rollup_runs: dict[str, int] = field(default_factory=dict)
    maintain_runs: dict[str, int] = field(default_factory=dict)
    logs: dict[int, str] = field(default_factory=dict)  # tails, for a failure message

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "logs"}
        return out


@dataclass
class _Member:
    index: int
    proc: subprocess.Popen[bytes]
    log: Path
    otlp_port: int
    metrics_port: int
    alive: bool = True
    conflicts: int = 0  # hopscope_store_conflict_retries at the last scrape

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.otlp_port}/v1/traces"

    def leading(self) -> bool | None:
        seen = self.scrape()
        return None if seen is None else seen[0]

    def scrape(self) -> tuple[bool, float] | None:
        """(hopscope_leader is 1, the last rollup's unix time or 0), None where /metrics does not answer."""
        try:
            code, body = _http_get(f"http://{HOST}:{self.metrics_port}/metrics", timeout_s=1.0)
        except OSError:
            return None
        if code != 200:
            return None
        scrape = Scrape(body.decode())
        self.conflicts = int(scrape.value("hopscope_store_conflict_retries") or 0)
        last = scrape.value("hopscope_rollup_last_success_timestamp_seconds") or 0.0
        return scrape.value("hopscope_leader") == 1.0, last


def _q(value: object) -> str:
    return json.dumps(str(value))


def _write_config(cfg: FleetConfig, backend: Backend, i: int, otlp: int, metrics: int) -> Path:
    folder = cfg.work / f"collector-{i}"
    folder.mkdir(parents=True, exist_ok=True)
    rules = cfg.work / "slo_rules"
    rules.mkdir(exist_ok=True)  # no SLOs: no thresholds, the rollup still runs
    s3 = backend.s3
    s3_lines = "".join(
        f"{k} = {_q(v)}\n"
        for k, v in (("endpoint", s3.endpoint), ("region", s3.region), ("url_style", s3.url_style))
        if v
    )
    text = f"""# generated by testbed/fleet.py
[store]
path = {_q(folder / "store")}
catalog = {_q(backend.catalog)}
data_path = {_q(backend.data_path)}
password_env = {_q(backend.password_env)}

[store.s3]
{s3_lines}use_ssl = {str(s3.use_ssl).lower()}

[slo]
rules = {_q(rules)}

[collect]
host_name = "collector-{i}"
rollup_interval_s = {cfg.rollup_interval_s}
rollup_grace_s = {cfg.rollup_grace_s}
maintain_interval_s = {cfg.maintain_interval_s}
leader_lease_s = {cfg.lease_s}

[collect.otlp]
host = "{HOST}"
http_port = {otlp}
grpc_enabled = false

[collect.metrics]
host = "{HOST}"
port = {metrics}

[collect.nvml]
enabled = false

[collect.network]
interval_s = 2
"""
    path = folder / "hopscope.toml"
    path.write_text(text)
    return path


def _start(cfg: FleetConfig, backend: Backend) -> list[_Member]:
    import os  # noqa: PLC0415

    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_") or k == backend.password_env}
    env["PYTHONUNBUFFERED"] = "1"
    members = []
    for i in range(cfg.collectors):
        otlp, metrics = free_port(), free_port()
        config = _write_config(cfg, backend, i, otlp, metrics)
        log = config.parent / "collect.log"
        proc = _spawn(
            [sys.executable, "-m", "hopscope.cli", "collect", "--config", str(config), "--log-level", "INFO"],
            log,
            cwd=str(ROOT),
            env=env,
        )
        members.append(_Member(i, proc, log, otlp, metrics))
    for m in members:
        _wait_until(
            f"hopscope collect #{m.index}",
            lambda m=m: m.leading() is not None and _http_get(f"http://{HOST}:{m.otlp_port}/")[0] > 0,
            120,
            m.proc,
            m.log,
        )
    return members


class _Watcher:
    """Scrapes every live collector's hopscope_leader and reads the store, every `every_s`."""

    def __init__(
        self, members: list[_Member], reader: Store, result: FleetResult, every_s: float = 0.25
    ) -> None:
        self.members = members
        self.reader = reader
        self.result = result
        self.every_s = every_s
        self.leaders: dict[int, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        before: dict[int, tuple[bool, float]] = {}
        while not self._stop.wait(self.every_s):
            seen = {m.index: m.scrape() for m in self.members if m.alive}
            now = {i: v for i, v in seen.items() if v is not None}
            for i, (leading, last) in now.items():
                was = before.get(i)
                if was is not None and not was[0] and not leading and last != was[1]:
                    self.result.rollups_while_standing_by += 1
            before = now
            self.leaders = {i: v[0] for i, v in now.items()}
            self.result.scrapes += 1
            self.result.most_leaders_at_once = max(
                self.result.most_leaders_at_once, sum(self.leaders.values())
            )
            n += 1
            if n % 4 == 0:  # a reader beside the writers, as a dashboard would be
                try:
                    self.reader.query(
                        "SELECT count(*) AS spans, (SELECT count(*) FROM hop_minutes) AS rows, "
                        "(SELECT max(minute) FROM hop_minutes) AS last FROM spans"
                    )
                    self.result.reads += 1
                except Exception as exc:  # noqa: BLE001 - every error is a finding
                    self.result.read_errors.append(str(exc)[:300])

    def leader(self) -> int | None:
        found = [i for i, v in self.leaders.items() if v]
        return found[0] if len(found) == 1 else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _until(what: str, check: Callable[[], bool], timeout_s: float, members: list[_Member]) -> float:
    """Seconds until check() holds; RuntimeError with the collectors' log tails past the timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if check():
            return time.monotonic() - t0
        time.sleep(0.1)
    tails = "\n".join(f"--- collector {m.index}:\n{_tail(m.log, 15)}" for m in members)
    raise RuntimeError(f"{what}: not within {timeout_s:.0f} s\n{tails}")


def run_fleet(
    cfg: FleetConfig, backend: Backend, progress: Callable[[str], None] | None = say_stderr
) -> FleetResult:
    say = progress or (lambda _: None)
    cfg.work.mkdir(parents=True, exist_ok=True)
    result = FleetResult(cfg.collectors)
    reader = Store(cfg.work / "reader", backend=backend)  # creates the store's tables
    hold = LeaseLeader(backend, holder="fleet-test-hold", lease_s=cfg.lease_s)
    hold.start()
    members: list[_Member] = []
    clients: list[Services] = []
    threads: list[threading.Thread] = []
    stop_traffic = threading.Event()
    watcher: _Watcher | None = None
    try:
        say(f"starting {cfg.collectors} collectors on {backend.describe()}")
        members = _start(cfg, backend)
        watcher = _Watcher(members, reader, result)
        _until("every collector stands by while the test holds the lease",
               lambda: len(watcher.leaders) == len(members) and not any(watcher.leaders.values()), 10, members)  # fmt: skip
        say("backfill: traces stamped two minutes ago, to every collector")
        for m in members:
            backfill = Services(m.endpoint, SoakConfig(seed=1000 + m.index, span_age_s=120.0))
            for _ in range(cfg.backfill_traces):
                backfill.request()
            backfill.shutdown(30)
            _merge(result, backfill)
        say(f"live traffic: {cfg.spans_per_second:g} spans/s to each collector")
        t_traffic = time.monotonic()
        for m in members:
            live = Services(m.endpoint, SoakConfig(seed=2000 + m.index))
            clients.append(live)
            t = threading.Thread(
                target=live.run, args=(cfg.spans_per_second, 3600.0, stop_traffic), name=f"client-{m.index}"
            )
            t.start()
            threads.append(t)
        # Give the lease up a few seconds after a minute boundary: the first leader rolls up to the minute
        # before it, and the next leader can roll the minute after within the grace of the boundary.
        now = time.time()
        boundary = math.ceil(now / 60) * 60
        release_at = boundary + max(0.0, cfg.rollup_grace_s - 8.0)
        if release_at < now + 3:
            release_at += 60
        say(f"releasing the lease in {release_at - now:.0f} s")
        time.sleep(max(0.0, release_at - time.time()))
        hold.stop()
        _until(
            "a collector leads after the lease is given up", lambda: watcher.leader() is not None, 10, members
        )
        first = watcher.leader()
        assert first is not None
        result.first_leader = first
        _until("the first leader rolls up", lambda: reader.get_state(WATERMARK_KEY) is not None, 30, members)
        result.first_watermark = reader.get_state(WATERMARK_KEY)
        say(f"collector {first} leads and rolled up to {result.first_watermark}")
        if cfg.kill_leader:
            victim = members[first]
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            victim.alive = False
            say(f"killed collector {first} (SIGKILL)")
            # Its clients' exports now fail: stop them in the background (each export retries up to 10 s).
            stopper = threading.Thread(target=clients[first].shutdown, args=(15,), daemon=True)
            stopper.start()
            result.takeover_s = _until(
                "another collector takes over",
                lambda: watcher.leader() not in (None, first),
                cfg.lease_s * 3 + 10,
                members,
            )
            result.next_leader = watcher.leader()
            say(f"collector {result.next_leader} leads {result.takeover_s:.1f} s after the kill")
            first_mark = result.first_watermark
            _until(
                "the new leader rolls up the next minute",
                lambda: (reader.get_state(WATERMARK_KEY) or "") > (first_mark or ""),
                60 + cfg.rollup_grace_s + 30,
                members,
            )
        left = cfg.seconds - (time.monotonic() - t_traffic)
        if left > 0:
            say(f"traffic goes on for {left:.0f} s")
            time.sleep(left)
        result.traffic_s = time.monotonic() - t_traffic
        stop_traffic.set()
        for t in threads:
            t.join(30)
        for i, c in enumerate(clients):
            if members[i].alive:
                c.shutdown(30)
        say("stopping the collectors (SIGTERM)")
        for m in members:
            if m.alive:
                _kill_group(m.proc, grace_s=30)
                m.alive = False
        watcher.stop()
        result.conflict_retries = sum(m.conflicts for m in members)
        for c in clients:
            _merge(result, c)
        _audit(reader, clients, result)
        for m in members:
            result.terms += [(int(t), h) for h, t in _LEADS.findall(m.log.read_text(errors="replace"))]
        result.terms.sort()
        return result
    finally:
        stop_traffic.set()
        if watcher is not None:
            watcher.stop()
        for m in members:
            result.logs[m.index] = _tail(m.log, 30)
            if m.proc.poll() is None:
                _kill_group(m.proc, grace_s=5)
        with contextlib.suppress(Exception):
            hold.stop()
        reader.close()


def _merge(result: FleetResult, services: Services) -> None:
    result.acknowledged += services.ledger.acknowledged
    result.failed += services.ledger.failed


def _audit(reader: Store, clients: list[Services], result: FleetResult) -> None:
    import duckdb  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    ids = reader.query("SELECT trace_id || span_id AS id, count(*) AS n FROM spans GROUP BY 1")
    result.stored = int(pc.sum(ids.column("n")).as_py() or 0)
    result.duplicates = result.stored - ids.num_rows
    acked = bytearray()
    for c in clients:
        acked += c.ledger.acked_ids
    con = duckdb.connect()
    try:
        n = len(acked) // 24
        sent = pa.table(
            {"id": pa.FixedSizeBinaryArray.from_buffers(pa.binary(24), n, [None, pa.py_buffer(bytes(acked))])}
        )
        con.register("sent", sent)
        con.register("stored", ids)
        row = con.execute(
            "SELECT count(*) FROM sent ANTI JOIN stored ON sent.id = stored.id::BLOB"
        ).fetchone()
        result.acked_missing = int(row[0]) if row else 0
    finally:
        con.close()
    mark = reader.get_state(WATERMARK_KEY)
    result.final_watermark = mark
    rows = reader.query("SELECT * FROM hop_minutes ORDER BY minute, client, server, route")
    result.hop_minutes_rows = rows.num_rows
    keys = reader.query(
        "SELECT count(*) - count(DISTINCT (minute, client, server, route)) AS n FROM hop_minutes"
    ).to_pylist()[0]
    result.hop_minutes_keys_repeated = int(keys["n"])
    result.minutes_rolled = int(
        reader.query("SELECT count(DISTINCT minute) AS n FROM hop_minutes").column("n")[0].as_py()
    )
    if mark is not None:
        from datetime import datetime  # noqa: PLC0415

        upto = datetime.fromisoformat(mark)
        spans = reader.query("SELECT * FROM spans")
        once = rollup_spans(spans, [])
        once = once.filter(pc.less(once.column("minute"), pa.scalar(upto, pa.timestamp("us"))))
        once = once.sort_by([("minute", "ascending"), ("client", "ascending"), ("server", "ascending"),
                             ("route", "ascending")])  # fmt: skip
        # The final minutes only: those from the watermark on are provisional, rewritten by every run
        # until they turn final, and the last run came before the last spans.
        final = rows.filter(pc.less(rows.column("minute"), pa.scalar(upto, pa.timestamp("us"))))
        result.hop_minutes_equal_to_one_rollup = once.to_pylist() == final.to_pylist()
    for name, target in (("rollup", result.rollup_runs), ("maintain", result.maintain_runs)):
        for r in reader.query(
            "SELECT ok, count(*) AS n FROM collector_runs WHERE collector = ? GROUP BY 1", [name]
        ).to_pylist():
            target["ok" if r["ok"] else "failed"] = int(r["n"])
