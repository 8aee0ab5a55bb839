"""Dashboard speed: navigation -> main chart visible in headless Chromium, per page, cold and warm,
and the server time of one live refresh tick of the Overview.

    .venv/bin/python benchmarks/dashboard.py                 # 30 days x 20 hops, 10M spans, 1 Hz GPU samples
    .venv/bin/python benchmarks/dashboard.py --days 7 --spans 1000000   # a quicker run
    .venv/bin/python benchmarks/dashboard.py --store /tmp/bench   # build there once, reuse it afterwards
    .venv/bin/python benchmarks/dashboard.py --store /tmp/demo1 --tick-only --range 24h   # quick: live tick only
    .venv/bin/python benchmarks/dashboard.py --store /tmp/bench --main-chart --rounds 5   # time to main chart / floor

Goals (issue 6): <= 1.5 s per page, <= 0.5 s warm, one live tick <= 100 ms of server time.
Goal (issue 16): each page's time to its main chart <= 1.2 x the floor (Streamlit + one Plotly chart), same run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hopscope import histogram  # noqa: E402
from hopscope.store import Store  # noqa: E402

END = datetime(2026, 11, 20, 12, 0)
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
PAGES = [  # (url path, title of the main chart)
    ("?range=28d", "End-to-end latency"),  # the Overview is the default page: "/" (not "/overview")
    ("incident", "Burn rate per alert window"),
    ("slo_report?slo=recommend-latency", "Error budget burn-down|Hop sub-budgets"),
    ("hops?range=28d", "Service graph"),
    ("resources?range=28d", "GPU utilization"),
    ("collectors?range=28d", "Collector runs"),
]


def _list_array(values: np.ndarray, per_row: int, rows: int, typ: pa.DataType) -> pa.ListArray:
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * per_row)
    return pa.ListArray.from_arrays(offsets, pa.array(values, typ))


def build(path: Path, days: int, hops: int, spans: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    store = Store(path)
    start = END - timedelta(days=days)
    minutes = days * 1440
    t0 = time.monotonic()
    # -- hop_minutes: '' -> api-gateway plus hops-1 downstream edges, daily cycle, a few spikes
    servers = ["api-gateway"] + [f"svc-{i:02d}" for i in range(1, hops)]
    clients = [""] + ["api-gateway"] * (hops - 1)
    minute = np.repeat(np.datetime64(start, "us") + np.arange(minutes) * np.timedelta64(60, "s"), hops)
    edge = np.tile(np.arange(hops), minutes)
    m = np.repeat(np.arange(minutes), hops)
    count = (600 + 400 * np.sin(2 * np.pi * m / 1440)).astype(np.int64)
    spike = ((m // 60) % (24 * 5) == 100).astype(np.float64)  # one hour every 5 days
    base = np.where(edge == 0, 90.0, 4.0 + edge) * (1 + 3 * spike)
    n = len(m)
    k = 12  # buckets per histogram row
    centers = histogram.bucket_index(base)
    idx = (centers[:, None] + np.arange(-6, 6)[None, :]).ravel().astype(np.int32)
    shape = np.exp(-0.5 * (np.arange(-6, 6) / 2.0) ** 2)
    cnt = np.maximum(1, np.round(count[:, None] * shape[None, :] / shape.sum())).astype(np.int64).ravel()
    good = np.where(spike > 0, (count * 0.5).astype(np.int64), count)  # the spikes breach the 200 ms SLO
    table = pa.table({
        "minute": pa.array(minute, pa.timestamp("us")),
        "client": pa.array(np.array(clients)[edge]), "server": pa.array(np.array(servers)[edge]),
        "route": pa.array(np.full(n, "/recommend")),
        "count": count, "errors": (count * 0.001).astype(np.int64),
        "duration_ms_sum": base * count, "duration_ms_max": base * 3,
        "client_ms_sum": np.where(edge == 0, 0.0, base * count), "server_ms_sum": base * count * 0.9,
        "gap_ms_sum": np.where(edge == 0, 0.0, base * count * 0.1), "self_ms_sum": base * count * 0.5,
        "skewed": np.zeros(n, np.int64),
        "hist_idx": _list_array(idx, k, n, pa.int32()), "hist_cnt": _list_array(cnt, k, n, pa.int64()),
        "good_le_ms": _list_array(np.full(n, 200.0), 1, n, pa.float64()), "good_cnt": _list_array(good, 1, n, pa.int64()),
        "exemplars": _list_array(np.array([], dtype=object), 0, n, pa.string()),
    })  # fmt: skip
    for lo in range(0, n, 200_000):
        store.append("hop_minutes", table.slice(lo, 200_000))
    print(f"  hop_minutes: {n:,} rows ({time.monotonic() - t0:.1f} s)", flush=True)

    # -- 1 Hz GPU samples for the whole range (util, SM clock, framebuffer used/free)
    t1 = time.monotonic()
    seconds = days * 86400
    gpu_labels = pa.MapArray.from_arrays(pa.array(np.arange(0, 3 * 200_001, 3, dtype=np.int32)),
                                         pa.array(np.tile(["gpu", "UUID", "modelName"], 200_000)),
                                         pa.array(np.tile(["0", "GPU-bench-0", "H100"], 200_000)))  # fmt: skip
    rows = 0
    for metric, level in (
        ("DCGM_FI_DEV_GPU_UTIL", 50.0),
        ("DCGM_FI_DEV_SM_CLOCK", 1800.0),
        ("DCGM_FI_DEV_FB_USED", 40000.0),
        ("DCGM_FI_DEV_FB_FREE", 40000.0),
    ):
        for lo in range(0, seconds, 200_000):
            hi = min(seconds, lo + 200_000)
            ts = np.datetime64(start, "us") + np.arange(lo, hi) * np.timedelta64(1, "s")
            val = level * (1 + 0.2 * np.sin(2 * np.pi * np.arange(lo, hi) / 86400)) + rng.normal(
                0, level * 0.02, hi - lo
            )
            store.append("samples", pa.table({
                "ts": pa.array(ts, pa.timestamp("us")), "metric": pa.array(np.full(hi - lo, metric)), "value": val,
                "source": pa.array(np.full(hi - lo, "bench")), "service": pa.array(np.full(hi - lo, "svc-01")),
                "host": pa.array(np.full(hi - lo, "gpu-node-1")), "labels": gpu_labels.slice(0, hi - lo),
            }))  # fmt: skip
            rows += hi - lo
    print(f"  samples: {rows:,} rows at 1 Hz ({time.monotonic() - t1:.1f} s)", flush=True)

    # -- raw spans: the last two days (the hot window), 10 spans per trace
    t2 = time.monotonic()
    hot = 2 * 86400
    chunk = 1_000_000
    for lo in range(0, spans, chunk):
        c = min(chunk, spans - lo)
        traces = rng.bytes(16 * (c // 10 + 1))
        tid = [traces[16 * (i // 10) : 16 * (i // 10) + 16] for i in range(c)]
        sid = [int(x).to_bytes(8, "big") for x in rng.integers(1, 2**62, c)]
        offs = rng.integers(0, hot * 1000, c).astype("timedelta64[ms]")
        store.append("spans", pa.table({
            "trace_id": pa.array(tid, pa.binary()), "span_id": pa.array(sid, pa.binary()),
            "service": pa.array(np.array(servers)[rng.integers(0, hops, c)]), "name": pa.array(np.full(c, "GET /x")),
            "kind": pa.array(np.full(c, 2), pa.int8()),
            "start_time": pa.array(np.datetime64(END - timedelta(days=2), "us") + offs.astype("timedelta64[us]"), pa.timestamp("us")),
            "duration_ms": rng.gamma(2.0, 20.0, c), "status_code": pa.array(np.zeros(c), pa.int8()),
            "http_route": pa.array(np.full(c, "/recommend")),
        }))  # fmt: skip
    print(f"  spans: {spans:,} rows ({time.monotonic() - t2:.1f} s)", flush=True)

    # -- collector runs: one per minute per collector
    runs = minutes
    store.append("collector_runs", pa.table({
        "ts": pa.array(np.datetime64(start, "us") + np.arange(runs) * np.timedelta64(60, "s"), pa.timestamp("us")),
        "collector": pa.array(np.full(runs, "bench")), "target": pa.array(np.full(runs, "nvml://0")),
        "ok": pa.array(np.ones(runs, bool)), "rows": np.full(runs, 240, np.int64), "duration_ms": np.full(runs, 3.0),
    }))  # fmt: skip
    t3 = time.monotonic()
    store.maintain(now=END, retention=False)
    print(
        f"  maintain (flush + merge): {time.monotonic() - t3:.1f} s; store {store.size_bytes() / 1e6:,.0f} MB; built in {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TITLES = {"": "Overview", "overview": "Overview", "incident": "Incident", "slo_report": "SLO report", "hops": "Hops",
          "resources": "Resources", "collectors": "Collectors"}  # fmt: skip
# Main chart drawn (its title, and at least one trace) under the page's own h1: after an in-app
# navigation the previous page's elements linger until the new run replaces them.
# A title "A|B": either chart (an in-app navigation to the SLO report shows the first SLO, not ?slo=).
_DRAWN = """([h1, t]) => (document.querySelector('h1')?.textContent || '').startsWith(h1) &&
    [...document.querySelectorAll('.js-plotly-plot')].some(p => t.split('|').some(x =>
    (p.querySelector('.gtitle')?.textContent || '').startsWith(x)) &&
    p.querySelectorAll('.trace, .bars path, .scatterlayer path').length > 0)"""


class ServerLog:
    """The dashboard's own script-run times ($HOPSCOPE_TIMING_LOG): the server's share of a page load."""

    def __init__(self, path: Path) -> None:
        self.path, self.mark = path, 0

    def start(self) -> None:
        self.mark = self.path.stat().st_size if self.path.exists() else 0

    def seconds(self, wait_s: float = 30.0) -> float:
        """Script time since start(): every full run (a page's first load in a process runs twice).
        Waits for the run to end: a page's main chart may be drawn before its script finishes."""
        deadline = time.monotonic() + wait_s
        while True:
            with self.path.open() as f:
                f.seek(self.mark)
                # page runs only: a fragment's own line ("page#fragment") is part of its page's run
                lines = [line for line in f if "\t" in line and "#" not in line.split("\t")[0]]
            if lines or time.monotonic() > deadline:
                return sum(float(line.split("\t")[1]) for line in lines) if lines else float("nan")
            time.sleep(0.05)

    def fragment_runs(self, name: str, wait_s: float = 0.0) -> list[float]:
        """Seconds of each run of fragment `name` ("page#fragment") since start(), waiting up to wait_s
        for a first one."""
        deadline = time.monotonic() + wait_s
        while True:
            runs: list[float] = []
            if self.path.exists():
                with self.path.open() as f:
                    f.seek(self.mark)
                    runs = [float(line.split("\t")[1]) for line in f if line.split("\t")[0] == name]
            if runs or time.monotonic() > deadline:
                return runs
            time.sleep(0.1)


def _wait_drawn(page: object, path: str, title: str, t: float) -> float:
    """Seconds from t until the page's main chart is drawn (nan and a screenshot on timeout)."""
    try:
        page.wait_for_function(_DRAWN, arg=[TITLES[path.split("?")[0]], title], timeout=120_000)  # type: ignore[attr-defined]
        return time.monotonic() - t
    except Exception:  # noqa: BLE001 - report the page, keep measuring the others
        page.screenshot(
            path=str(Path(tempfile.gettempdir()) / f"bench-timeout-{path.split('?')[0] or 'overview'}.png")
        )  # type: ignore[attr-defined]
        return float("nan")


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# The floor under every page, measured in the same run: Streamlit alone (a title and a line of text) and
# Streamlit with one Plotly chart of 2,000 points. No page can load faster than these on this machine.
FLOOR_APPS = {
    "floor: Streamlit, text only": (
        "import streamlit as st\nst.title('Floor')\nst.write('text only')\n",
        "() => (document.querySelector('h1')?.textContent || '').startsWith('Floor') && document.body.innerText.includes('text only')",
    ),
    "floor: Streamlit + 1 Plotly chart": (
        "import streamlit as st, plotly.graph_objects as go\nst.title('Floor')\n"
        "st.plotly_chart(go.Figure(go.Scatter(x=list(range(2000)), y=[i % 50 for i in range(2000)]), "
        "layout={'title': {'text': 'Main chart'}}))\n",
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => "
        "(p.querySelector('.gtitle')?.textContent || '').startsWith('Main chart') && p.querySelectorAll('.trace').length > 0)",
    ),
    # As many charts as the Overview draws (3 time charts, 8 resource panels), 3 series of 2,000 points each;
    # the main chart is the first. Streamlit mounts a run's charts together, so the first waits for the rest.
    "floor: Streamlit + 11 Plotly charts": (
        "import streamlit as st, plotly.graph_objects as go\nst.title('Floor')\n"
        "for i in range(11):\n"
        "    st.plotly_chart(go.Figure([go.Scatter(x=list(range(2000)), y=[(i + k + j) % 50 for j in range(2000)]) "
        "for k in range(3)], layout={'title': {'text': 'Main chart' if i == 0 else f'Chart {i}'}}), key=f'c{i}')\n",
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => "
        "(p.querySelector('.gtitle')?.textContent || '').startsWith('Main chart') && p.querySelectorAll('.trace').length > 0)",
    ),
}


def _serve(script: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """streamlit run `script` on a free loopback port; (process, base url) once it answers its health check."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1"], cwd=ROOT, env=env or dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    return proc, url


def measure_floor(browser: Any, rounds: int, view: dict[str, int]) -> None:
    """Cold and warm URL loads of the two floor apps, as the pages are measured (rows of the same table)."""
    folder = Path(tempfile.mkdtemp(prefix="hopscope-bench-floor-"))
    for label, (code, drawn) in FLOOR_APPS.items():
        script = folder / "floor_app.py"
        script.write_text(code)
        proc, url = _serve(script)
        try:
            ctx = browser.new_context(viewport=view)
            page = ctx.new_page()  # warm the server and the HTTP cache, as for the dashboard
            page.goto(url)
            page.wait_for_function(drawn, timeout=120_000)
            page.close()
            cold_ctx = browser.new_context(viewport=view)
            page = cold_ctx.new_page()
            t = time.monotonic()
            page.goto(url)
            page.wait_for_function(drawn, timeout=120_000)
            cold = time.monotonic() - t
            cold_ctx.close()
            warm = []
            for _ in range(max(rounds, 3)):
                page = ctx.new_page()
                t = time.monotonic()
                page.goto(url)
                page.wait_for_function(drawn, timeout=120_000)
                warm.append(time.monotonic() - t)
                page.close()
            ctx.close()
            print(
                f"{label:<34} {cold:>9.2f} {statistics.median(warm):>9.2f} {'':>7} {'':>11} {'':>7}  {_load()}",
                flush=True,
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def measure(store: Path, rounds: int, only: list[str] | None = None) -> None:
    """Per page: a cold URL load (new browser profile: no HTTP cache, as a first visit), a warm URL load
    (new tab, cached JS; median of `rounds`), and an in-app navigation (a click in the sidebar: the
    websocket stays open, only the page's script runs). Each with the server's script time of that load."""
    from playwright.sync_api import sync_playwright

    log = ServerLog(Path(tempfile.mkdtemp(prefix="hopscope-bench-timing-")) / "runs.tsv")
    env = {**os.environ, "HOPSCOPE_STORE": str(store), "HOPSCOPE_SLO_RULES": str(ROOT / "slo_rules"),
           "HOPSCOPE_TIMING_LOG": str(log.path)}  # fmt: skip
    pages = [(p, t) for p, t in PAGES if not only or (p.split("?")[0] or "overview") in only]
    view = {"width": 1500, "height": 1100}
    proc, url = _serve(ROOT / "dashboard" / "app.py", env)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            ctx = browser.new_context(viewport=view)  # one profile: its HTTP cache holds Streamlit's JS
            # Warm the process (imports, store opening, the first-run rerun) and the HTTP cache.
            page = ctx.new_page()
            page.goto(url + "/collectors?range=1h")
            page.wait_for_selector("h1", timeout=120_000)
            page.wait_for_timeout(2000)
            page.close()
            print(
                f"\n{'page':<34} {'cold URL':>9} {'warm URL':>9} {'server':>7} {'in-app nav':>11} {'server':>7}  load"
            )
            print(f"{'':<34} {'(s)':>9} {'(s) med.':>9} {'(s)':>7} {'(s)':>11} {'(s)':>7}")
            results = {}
            for path, title in pages:
                cold = browser.new_context(viewport=view)
                page = cold.new_page()
                t = time.monotonic()
                page.goto(f"{url}/{path}")
                first = _wait_drawn(page, path, title, t)
                cold.close()
                warm, server = [], []
                for _ in range(rounds):
                    page = ctx.new_page()
                    log.start()
                    t = time.monotonic()
                    page.goto(f"{url}/{path}")
                    warm.append(_wait_drawn(page, path, title, t))
                    server.append(log.seconds())
                    page.close()
                results[path] = (first, statistics.median(warm), statistics.median(server))
            # In-app navigation: one tab, a click on each page's sidebar link in turn (the shared
            # parameters, e.g. ?range=28d, follow from page to page).
            page = ctx.new_page()
            page.goto(f"{url}/collectors?range=28d")
            page.wait_for_selector("h1", timeout=120_000)
            page.wait_for_timeout(1500)
            nav: dict[str, list[tuple[float, float]]] = {}
            for _ in range(max(1, rounds)):
                for path, title in pages:
                    name = path.split("?")[0] or "overview"
                    link = page.locator("[data-testid='stSidebarNav'] a", has_text=TITLES[name]).first
                    if name == "collectors":  # its own link would not navigate: go via the overview
                        page.locator("[data-testid='stSidebarNav'] a", has_text="Overview").first.click()
                        page.wait_for_timeout(1500)
                    log.start()
                    t = time.monotonic()
                    link.click()
                    took = _wait_drawn(page, path, title, t)
                    nav.setdefault(path, []).append((took, log.seconds()))
            for path, _ in pages:
                first, warm_s, server_s = results[path]
                n = nav.get(path, [(float("nan"), float("nan"))])
                print(
                    f"{path if path[0] != '?' else '/' + path:<34} {first:>9.2f} {warm_s:>9.2f} {server_s:>7.2f} "
                    f"{statistics.median(x for x, _ in n):>11.2f} {statistics.median(y for _, y in n):>7.2f}  {_load()}",
                    flush=True,
                )
            measure_floor(browser, rounds, view)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def floor_only(rounds: int) -> None:
    """The floor apps alone, as measure() loads them (cold and warm URL loads)."""
    from playwright.sync_api import sync_playwright

    print(f"\n{'app':<34} {'cold URL':>9} {'warm URL':>9}{'':>29}load")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        measure_floor(browser, rounds, {"width": 1500, "height": 1100})
        browser.close()


# ------------------------------------------------------------------ the main chart first (issue 16 item 3)

# Every chart of the page drawn: its main chart (_DRAWN), no section still waiting (hopscope.dashboard.first's
# placeholder) and an SVG in every Plotly chart.
_ALL_DRAWN = f"""([h1, t, wait]) => ({_DRAWN})([h1, t]) && !document.body.innerText.includes(wait) &&
    [...document.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('.main-svg'))"""
MAIN_CHART_GOAL = 1.2  # time to the main chart over the floor (Streamlit + one Plotly chart), issue 16


def main_chart_ratio(
    store: Path, rounds: int, only: list[str] | None = None, before: Path | None = None
) -> None:
    """Per page, a warm URL load (a new tab of one browser profile: Streamlit's and Plotly's JavaScript in
    its HTTP cache) until the main chart is drawn and until every chart is, against the floor app
    (Streamlit + one Plotly chart) loaded the same way. Floor and pages take turns, round by round, so that
    both see the same load on this shared machine; the ratio is the page's median over the floor's.
    before: another checkout's root (e.g. `git worktree add /tmp/old <commit>`), served and measured in the
    same turns, for a before/after in one run."""
    from playwright.sync_api import sync_playwright

    from hopscope.dashboard.first import PLACEHOLDER

    code, floor_drawn = FLOOR_APPS["floor: Streamlit + 1 Plotly chart"]
    floor_script = Path(tempfile.mkdtemp(prefix="hopscope-bench-floor-")) / "floor_app.py"
    floor_script.write_text(code)
    env = {**os.environ, "HOPSCOPE_STORE": str(store), "HOPSCOPE_SLO_RULES": str(ROOT / "slo_rules")}
    pages = [(p, t) for p, t in PAGES if not only or (p.split("?")[0] or "overview") in only]
    view = {"width": 1500, "height": 1100}
    dash, url = _serve(ROOT / "dashboard" / "app.py", env)
    floor_proc, floor_url = _serve(floor_script)
    servers = {"": url}
    procs = [dash, floor_proc]
    if before is not None:
        old, servers["before"] = _serve(before / "dashboard" / "app.py", {**env, "PYTHONPATH": str(before)})
        procs.append(old)
    loads: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            ctx = browser.new_context(viewport=view)

            def load(target: str, drawn: str, arg: object = None) -> float:
                """Seconds from navigation in a new tab until `drawn` holds."""
                page = ctx.new_page()
                t = time.monotonic()
                page.goto(target)
                page.wait_for_function(drawn, arg=arg, timeout=120_000)
                took = time.monotonic() - t
                page.close()
                return took

            # Warm the server processes (imports, the store, each page's caches) and the HTTP cache.
            load(floor_url, floor_drawn)
            for path, title in pages:
                for base in servers.values():
                    load(f"{base}/{path}", _ALL_DRAWN, [TITLES[path.split("?")[0]], title, PLACEHOLDER])
            floor: list[float] = []
            main: dict[tuple[str, str], list[float]] = {}
            every: dict[tuple[str, str], list[float]] = {}
            for _ in range(rounds):
                for path, title in pages:
                    name = TITLES[path.split("?")[0]]
                    floor.append(load(floor_url, floor_drawn))
                    loads.append(os.getloadavg()[0])
                    for which, base in servers.items():
                        main.setdefault((which, path), []).append(
                            load(f"{base}/{path}", _DRAWN, [name, title])
                        )
                        # every chart: a load of its own, so that its check does not slow the main chart's
                        every.setdefault((which, path), []).append(
                            load(f"{base}/{path}", _ALL_DRAWN, [name, title, PLACEHOLDER])
                        )
            browser.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    fl = statistics.median(floor)
    print(
        f"\nTime to the main chart, warm URL load in headless Chromium (median of {rounds}; floor = Streamlit + "
        f"one Plotly chart, median of {len(floor)} loads taking turns with the pages; load average "
        f"{min(loads):.1f}-{max(loads):.1f})"
    )
    print(f"{'page':<44} {'main chart':>10} {'floor':>6} {'ratio':>6} {'goal':>5} {'all charts':>11}")
    for path, _ in pages:
        for which in servers:
            m = statistics.median(main[which, path])
            label = f"{path if path[0] != '?' else '/' + path}{f' ({which})' if which else ''}"
            print(
                f"{label:<44} {m:>9.2f}s {fl:>5.2f}s {m / fl:>5.2f}x "
                f"{MAIN_CHART_GOAL:>4.1f}x {statistics.median(every[which, path]):>10.2f}s",
                flush=True,
            )


def land_a_minute(store: Store) -> None:
    """New data: the newest minute of rollups, samples and collector runs again, one minute later."""
    import pyarrow.compute as pc

    for table, col in (("hop_minutes", "minute"), ("samples", "ts"), ("collector_runs", "ts")):
        last = store.query(f"SELECT max({col}) AS m FROM {table}").to_pylist()[0]["m"]
        rows = store.query(f"SELECT * FROM {table} WHERE {col} > ?", [last - timedelta(minutes=1)])
        i = rows.schema.get_field_index(col)
        moved = pc.add(rows.column(col), pa.scalar(timedelta(minutes=1), pa.duration("us")))
        store.append(table, rows.set_column(i, rows.schema.field(i), moved.cast(rows.schema.field(i).type)))


def browser_tick(store: Path, range_key: str = "28d", rounds: int = 7) -> None:
    """Server time of the Overview's live refresh as it happens: a Chromium tab on ?refresh=5s, where each
    tick reruns the live fragment only (its own time is logged). Ticks with no new data, then ticks
    each preceded by a minute of new data landed in the store by this process (the server's snapshot
    cache lives LIVE_TTL_S = 5 s: a tick may still show the previous minute; each tick is counted)."""
    from playwright.sync_api import sync_playwright

    log = ServerLog(Path(tempfile.mkdtemp(prefix="hopscope-bench-tick-")) / "runs.tsv")
    env = {**os.environ, "HOPSCOPE_STORE": str(store), "HOPSCOPE_SLO_RULES": str(ROOT / "slo_rules"),
           "HOPSCOPE_TIMING_LOG": str(log.path)}  # fmt: skip
    proc, url = _serve(ROOT / "dashboard" / "app.py", env)
    name = "overview#live"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            t = time.monotonic()
            page.goto(f"{url}/?range={range_key}&refresh=5s")
            _wait_drawn(page, f"?range={range_key}", "End-to-end latency", t)
            log.start()  # the first tick after the load is not counted (it may overlap the load's own run)
            log.fragment_runs(name, wait_s=60)
            writer = Store(store)
            results: dict[str, list[float]] = {}
            for case, land in (("no new data", False), ("a minute of new data before each tick", True)):
                got: list[float] = []
                for _ in range(rounds):
                    log.start()
                    if land:
                        land_a_minute(writer)
                    got += log.fragment_runs(name, wait_s=30)[:1]
                results[case] = got
            writer.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        f"\nOverview ?range={range_key}, live refresh in Chromium (?refresh=5s): server time of the fragment's rerun"
    )
    for case, got in results.items():
        if got:
            print(f"  {case:<40}: median {1000 * statistics.median(got):5.0f} ms, max {1000 * max(got):5.0f} ms "
                  f"({len(got)} ticks; load average {_load()})")  # fmt: skip


def tick(store: Path, range_key: str = "28d", rounds: int = 7, page: str = "overview") -> None:
    """Server time of one live refresh of a page: an AppTest rerun (the page's body is its live fragment).

    Cases: every cache warm; the store's snapshot re-read but unchanged (views and figures reused); new data
    (a minute of rollups and samples landed: what a live store sees all the time, measured by adding
    one to the store before each tick; the store grows); and every cache cleared (a cold server).
    """
    from streamlit.testing.v1 import AppTest

    os.environ["HOPSCOPE_STORE"] = str(store)
    os.environ["HOPSCOPE_SLO_RULES"] = str(ROOT / "slo_rules")
    from hopscope.dashboard import cache

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
    at.query_params["range"] = range_key
    at.query_params["refresh"] = "off"
    t = time.monotonic()
    at.run()
    if page != "overview":
        at.switch_page(f"pages/{page}.py").run()
    first = time.monotonic() - t
    assert not at.exception, [e.value for e in at.exception]
    everything = (
        cache.snapshot,
        cache.at_snapshot,
        cache.call,
        cache.figure,
        cache.panel_figure,
        cache.figure_of,
        cache.panels,
        cache.memo,
    )
    try:  # the rows held per store snapshot (query.changes), where this version has them
        from hopscope.query import changes

        everything = (*everything, changes)
    except ImportError:
        pass
    reads = [0]  # store reads in this process (a tick's DuckLake reads: ~5-25 ms each of catalog work)
    real_query = Store.query

    def counted(self: Store, sql: str, params: Any = None) -> Any:
        reads[0] += 1
        return real_query(self, sql, params)

    Store.query = counted  # type: ignore[method-assign]
    cases = {  # which caches a tick finds expired, and whether a minute of data lands first
        "warm (within every TTL)": ((), False),
        "no new data (the store's snapshot re-read)": ((cache.snapshot,), False),
        "new data (a minute landed; snapshot re-read)": ((cache.snapshot,), True),
        "every cache cleared (views re-queried in full)": (everything, False),
    }
    print(f"\n{page} ?range={range_key} (AppTest, server side): first run {first:.2f} s")
    for mode, (caches, land) in cases.items():
        times, cpus, counts = [], [], []
        for _ in range(rounds):
            if land:
                land_a_minute(cache.open_store(str(store)))
            for cached in caches:
                cached.clear()
            reads[0] = 0
            t, c = time.monotonic(), time.process_time()
            at.run()
            times.append(time.monotonic() - t)
            cpus.append(time.process_time() - c)  # every thread's: the script's and DuckDB's
            counts.append(reads[0])
            assert not at.exception, [e.value for e in at.exception]
        print(
            f"live refresh tick, {mode:<48}: median {1000 * statistics.median(times):5.0f} ms, "
            f"min {1000 * min(times):5.0f} ms, CPU median {1000 * statistics.median(cpus):4.0f} ms, "
            f"store reads {statistics.median(counts):.0f}  (load average {_load()})",
            flush=True,
        )
    Store.query = real_query  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, help="where to build the store (default: a temp dir)")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="(kept for old command lines: an existing --store is always reused)",
    )
    ap.add_argument("--tick-only", action="store_true", help="only the live-tick figure (no browser)")
    ap.add_argument("--range", default="28d", help="range for the tick (default 28d)")
    ap.add_argument(
        "--tick-page", default="overview", choices=["overview", "resources"], help="page of the tick"
    )
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--hops", type=int, default=20)
    ap.add_argument("--spans", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3, help="warm loads (and in-app navigations) per page")
    ap.add_argument("--pages", nargs="*", choices=list(TITLES), help="only these pages (default: all)")
    ap.add_argument(
        "--floor-only", action="store_true", help="only the floor apps (Streamlit and Plotly alone; no store)"
    )
    ap.add_argument(
        "--before",
        type=Path,
        help="with --main-chart: also measure this checkout's dashboard (a before/after)",
    )
    ap.add_argument(
        "--main-chart",
        action="store_true",
        help="only each page's time to its main chart over the one-Plotly-chart floor (issue 16 item 3)",
    )
    args = ap.parse_args()
    if args.floor_only:
        floor_only(args.rounds)
        return
    path = args.store or Path(tempfile.mkdtemp(prefix="hopscope-bench-")) / "store"
    if not (path / "catalog.sqlite").exists():
        print(
            f"building {path}: {args.days} days x {args.hops} hops, {args.spans:,} spans, 1 Hz GPU samples",
            flush=True,
        )
        build(path, args.days, args.hops, args.spans)
    if args.main_chart:
        main_chart_ratio(path, args.rounds, args.pages, args.before)
        return
    if args.tick_only:
        tick(path, args.range, page=args.tick_page)
        if args.tick_page == "overview":
            browser_tick(path, args.range)
    else:
        measure(path, args.rounds, args.pages)
        tick(path, args.range, page=args.tick_page)
        browser_tick(path, args.range)


if __name__ == "__main__":
    main()
