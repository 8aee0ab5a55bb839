"""Every dashboard page in Debian's headless Chromium against one Streamlit server: it loads without
console errors, its main chart is drawn, and a screenshot lands in test-artifacts/screenshots/."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.demo import RULES, breach_for, truth
from support.handbuilt import EVIL
from support.servers import stop_process

from hopscope.charts import BAND_MARKER_NAME
from hopscope.dashboard import first

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "screenshots"
# Loading a page URL directly, Streamlit's frontend first probes /<page>/_stcore/... and falls back to /_stcore/...
_PROBES = ("/_stcore/health", "/_stcore/host-config")
PAGES = [  # the Overview is the default page, served at "/" ("/overview" is not one of st.navigation's URLs)
    ("", "?range=7d", "End-to-end latency"),
    ("incident", "?incident=FLASH", "Burn rate per alert window"),
    ("slo_report", "?slo=recommend-latency", "Budget consumed per incident"),
    ("hops", "?range=7d", "Service graph"),
    ("resources", "?range=7d", "GPU utilization"),
    ("collectors", "", None),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(store: Path, log: Path, **extra_env: str) -> Iterator[str]:
    """A Streamlit server of the dashboard on `store`, stopped by its process id."""
    port = _free_port()
    env = {**os.environ, "HOPSCOPE_STORE": str(store), "HOPSCOPE_SLO_RULES": RULES, **extra_env}
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "dashboard" / "serve.py"),  # what `hopscope dashboard` runs: app.py behind access.py
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        stop_process(proc, 10)


@pytest.fixture(scope="session")
def server(dash_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Streamlit server for the session on the demo store."""
    with serve(dash_store, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


class PageWatch:
    """A browser page that records console errors and failed responses (ignoring Streamlit's own path probes)."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1500, "height": 1100})
        self.errors: list[str] = []
        self.bad: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on(
            "response",
            lambda r: self.bad.append(r.url) if r.status >= 400 and not r.url.endswith(_PROBES) else None,
        )

    def real_errors(self) -> list[str]:
        probes_only = not self.bad
        return [e for e in self.errors if not (probes_only and "status of 404" in e)] + self.bad


def wait_for_chart(page: Any, title: str | None, timeout_ms: int = 60_000) -> None:
    page.wait_for_selector("h1", timeout=timeout_ms)
    if title is None:
        page.wait_for_selector("[data-testid='stDataFrame'], [data-testid='stTable']", timeout=timeout_ms)
        return
    page.wait_for_function(
        "t => [...document.querySelectorAll('.js-plotly-plot')].some(p => (p.querySelector('.gtitle')?.textContent || '').startsWith(t)"
        " && p.querySelectorAll('.trace, .bars path, .scatterlayer path').length > 0)",
        arg=title,
        timeout=timeout_ms,
    )


@pytest.mark.parametrize(("name", "query", "main_chart"), PAGES, ids=[p[0] or "overview" for p in PAGES])
def test_page_loads_without_console_errors_and_draws_its_main_chart(
    server: str,
    browser: Any,
    dash_store: Path,
    name: str,
    query: str,
    main_chart: str | None,
) -> None:
    if not (ROOT / "dashboard" / "pages" / f"{name or 'overview'}.py").exists():
        pytest.skip(f"dashboard/pages/{name or 'overview'}.py not written yet")
    if "FLASH" in query:  # the flash sale's breach: its permalink
        query = query.replace("FLASH", breach_for(dash_store, truth(dash_store, "flash-sale"))["id"])
    w = PageWatch(browser)
    try:
        w.page.goto(f"{server}/{name}{query}")
        wait_for_chart(w.page, main_chart)
        w.page.wait_for_timeout(500)  # let the remaining charts finish drawing for the screenshot
        SHOTS.mkdir(parents=True, exist_ok=True)
        w.page.screenshot(path=str(SHOTS / f"{name or 'overview'}.png"), full_page=True)
        assert w.page.locator("[data-testid='stException']").count() == 0
        assert w.page.get_by_text("Page not found").count() == 0
        assert w.real_errors() == []
    finally:
        w.page.close()


def test_breach_link_on_overview_opens_its_incident_page(server: str, browser: Any) -> None:
    w = PageWatch(browser)
    try:
        w.page.goto(f"{server}/?range=7d")
        wait_for_chart(w.page, "End-to-end latency")
        link = w.page.locator("a[href*='incident?incident=']").first
        link.wait_for(timeout=30_000)
        label = link.inner_text()
        link.click()
        w.page.wait_for_url("**/incident?incident=*", timeout=30_000)
        wait_for_chart(w.page, "Burn rate per alert window")
        number = label.split("·")[0].replace("Incident", "").strip()
        assert (
            w.page.get_by_role("heading", name=f"Incident {number} ").count()
            + w.page.locator(f"h3:has-text('Incident {number}')").count()
            >= 1
        )
        assert w.real_errors() == []
    finally:
        w.page.close()


# Script and image payloads in telemetry text and in a shared link: Chromium must show them as text.
_PAYLOAD_PROBE = """() => ({
    imgs: document.querySelectorAll('img[src="x"]').length,
    scripts: [...document.querySelectorAll('script')].filter(s => (s.textContent || '').includes('alert(')).length,
    svgText: [...document.querySelectorAll('.js-plotly-plot text')].map(t => t.textContent).join('\\n'),
    bodyText: document.body.innerText,
})"""


def test_script_and_img_span_names_render_as_text_in_chromium(
    browser: Any,
    evil_store: Path,
    tmp_path: Path,
) -> None:
    """A span named <script>…</script><img onerror=…> shows literally in the trace waterfall; nothing runs."""
    with serve(evil_store, tmp_path / "server.log") as url:
        w = PageWatch(browser)
        try:
            w.page.goto(f"{url}/incident?incident=1")
            wait_for_chart(w.page, "Trace waterfall")
            w.page.wait_for_timeout(1000)  # an onerror handler would have fired by now
            seen = w.page.evaluate(_PAYLOAD_PROBE)
            assert seen["imgs"] == 0 and seen["scripts"] == 0
            assert EVIL in seen["svgText"] or EVIL in seen["bodyText"], "the span name is not shown literally"
            assert not [e for e in w.errors if e.startswith("dialog")]
            assert w.page.locator("[data-testid='stException']").count() == 0
        finally:
            w.page.close()


def test_script_in_a_shared_link_is_shown_as_text_not_run(server: str, browser: Any) -> None:
    w = PageWatch(browser)
    try:
        bad = "<img src=x onerror=alert(1)>"
        w.page.goto(f"{server}/?range={urllib.parse.quote(bad)}")
        wait_for_chart(w.page, "End-to-end latency")
        w.page.wait_for_timeout(500)
        seen = w.page.evaluate(_PAYLOAD_PROBE)
        assert seen["imgs"] == 0
        assert bad in seen["bodyText"]  # the warning quotes it literally
        assert not [e for e in w.errors if e.startswith("dialog")]
    finally:
        w.page.close()


# The latency chart's breach markers: each one's screen box, incident id (customdata) and number (hover text).
_BREACH_MARKERS = """([title, name]) => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')]
        .find(p => (p.querySelector('.gtitle')?.textContent || '').startsWith(title));
    if (!gd || !gd.data) return [];
    const i = gd.data.findIndex(t => t.name === name);
    if (i < 0) return [];
    const trace = gd.querySelectorAll('.scatterlayer .trace')[i];
    return [...(trace ? trace.querySelectorAll('.points path') : [])].map((p, k) => {
        const r = p.getBoundingClientRect();
        return {x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width,
                id: String(gd.data[i].customdata[k]), text: String(gd.data[i].hovertext[k])};
    });
}"""


def test_clicking_a_breach_marker_on_the_overview_latency_chart_opens_its_incident(
    server: str, browser: Any
) -> None:
    """A real mouse click on a breach band's marker in the Overview's latency chart reaches that incident."""
    w = PageWatch(browser)
    try:
        w.page.goto(f"{server}/?range=7d&refresh=off")
        wait_for_chart(w.page, "End-to-end latency")
        w.page.wait_for_function(
            f"args => ({_BREACH_MARKERS})(args).length > 0",
            arg=["End-to-end latency", BAND_MARKER_NAME],
            timeout=30_000,
        )
        markers = w.page.evaluate(_BREACH_MARKERS, ["End-to-end latency", BAND_MARKER_NAME])
        # A marker no other one covers, so the click can only mean that breach.
        alone = [
            m
            for m in markers
            if all(o is m or abs(o["x"] - m["x"]) + abs(o["y"] - m["y"]) > m["w"] for o in markers)
        ]
        assert alone, f"every breach marker overlaps another: {markers}"
        m = alone[0]
        assert m["w"] > 0 and m["text"].startswith("incident ")
        number = m["text"].split("·")[0].replace("incident", "").strip()
        w.page.mouse.move(m["x"], m["y"])
        w.page.mouse.click(m["x"], m["y"])
        w.page.wait_for_url("**/incident?*incident=*", timeout=30_000)
        wait_for_chart(w.page, "Burn rate per alert window")
        w.page.locator(f"h3:has-text('Incident {number}')").first.wait_for(timeout=30_000)
        shown = urllib.parse.parse_qs(urllib.parse.urlparse(w.page.url).query)["incident"][0]
        assert shown in (number, m["id"])
        assert w.page.locator("[data-testid='stException']").count() == 0
        assert w.real_errors() == []
    finally:
        w.page.close()


# Points Plotly drew for one chart (by title prefix): markers are <path> elements under .points.
_DRAWN_POINTS = """t => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')]
        .find(p => (p.querySelector('.gtitle')?.textContent || '').startsWith(t));
    return gd ? gd.querySelectorAll('.scatterlayer .trace:first-child .points path').length : -1;
}"""


def test_real_h200_samples_are_drawn_as_visible_points_in_chromium(
    browser: Any,
    h200_store: Path,
    tmp_path: Path,
) -> None:
    """36 s of real 1 Hz NVML samples: once one invisible 1-point line, now markers on 5 s buckets."""
    with serve(h200_store, tmp_path / "server.log") as url:
        w = PageWatch(browser)
        try:
            w.page.goto(f"{url}/resources?range=15m&refresh=off")
            wait_for_chart(w.page, "GPU utilization")
            w.page.wait_for_function(f"({_DRAWN_POINTS})('GPU utilization') > 4", timeout=30_000)
            w.page.wait_for_function(f"({_DRAWN_POINTS})('GPU framebuffer used') > 4", timeout=30_000)
            SHOTS.mkdir(parents=True, exist_ok=True)
            w.page.screenshot(path=str(SHOTS / "resources_h200.png"), full_page=True)
            assert w.page.locator("[data-testid='stException']").count() == 0
            assert w.real_errors() == []
        finally:
            w.page.close()


def test_the_slo_reports_html_is_built_when_its_button_is_clicked_and_downloads_whole(
    server: str, browser: Any
) -> None:
    """The page hands Streamlit a callable: the ~5 MB file is made on the click, not on every rerun."""
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    try:
        page.goto(f"{server}/slo_report?slo=recommend-latency&window=28d")
        wait_for_chart(page, "Error budget")
        with page.expect_download(timeout=120_000) as got:
            page.locator("[data-testid='stDownloadButton'] button", has_text="HTML (self-contained)").click()
        text = Path(got.value.path()).read_text(encoding="utf-8")
        assert got.value.suggested_filename == "slo-report-recommend-latency-28d.html"
        assert text.startswith("<!doctype html>") and "SLO report: recommend-latency" in text
        assert len(text) > 1_000_000 and "Plotly.newPlot" in text  # plotly.js and the charts inline
    finally:
        page.close()


# The main chart first (hopscope.dashboard.first): per page, its main chart's element and the selector of
# its secondary sections' elements, which must not be in the document yet when the main chart's SVG is.
MAIN_FIRST = [
    ("", "?range=7d", ".st-key-latency",
     ".st-key-traffic, .st-key-hops, [class*='st-key-panel_'], [data-testid='stMetric']"),
    ("incident", "?incident=FLASH", ".st-key-burn",
     "[class*='st-key-ev_'], .st-key-waterfall, .st-key-bubbleup, .st-key-trace"),
    ("slo_report", "?slo=recommend-latency", ".st-key-burndown",
     ".st-key-incident_cost, .st-key-hop_budgets, [data-testid='stDownloadButton']"),
    ("hops", "?range=7d", ".st-key-graph", ".st-key-hop_stack, [data-testid='stDataFrame']"),
    ("resources", "?range=7d", ".st-key-panel_gpu_util", "[class*='st-key-panel_']:not(.st-key-panel_gpu_util)"),
    ("collectors", "", ".st-key-runs", "[data-testid='stDataFrame'], [data-testid='stMetric'], .stMain strong"),
]  # fmt: skip
# Installed before the page's own scripts: at the first DOM change after which the main chart's SVG is
# in the document, note which secondary elements are there too (window.__mainFirst).
_WATCH_MAIN = """([main, secondary]) => {
    const look = () => {
        if (window.__mainFirst || !document.querySelector(main + ' .js-plotly-plot .main-svg')) return;
        window.__mainFirst = [...document.querySelectorAll(secondary)].map(e => e.className || e.dataset.testid);
    };
    new MutationObserver(look).observe(document, {childList: true, subtree: true});
}"""


@pytest.mark.parametrize(
    ("name", "query", "main", "secondary"), MAIN_FIRST, ids=[p[0] or "overview" for p in MAIN_FIRST]
)
def test_each_page_draws_its_main_chart_before_its_secondary_sections(
    server: str, browser: Any, dash_store: Path, name: str, query: str, main: str, secondary: str
) -> None:
    if "FLASH" in query:
        query = query.replace("FLASH", breach_for(dash_store, truth(dash_store, "flash-sale"))["id"])
    w = PageWatch(browser)
    try:
        w.page.add_init_script(f"({_WATCH_MAIN})({[main, secondary]!r})")
        w.page.goto(f"{server}/{name}{query}")
        seen = w.page.wait_for_function("() => window.__mainFirst", timeout=60_000).json_value()
        assert seen == [], f"already in the page when the main chart {main} was drawn: {seen}"
        # ... and the secondary sections do come, once it is drawn
        w.page.wait_for_selector(secondary, state="attached", timeout=60_000)
        w.page.wait_for_function(
            "t => !document.body.innerText.includes(t)", arg=first.PLACEHOLDER, timeout=60_000
        )
        assert w.page.locator("[data-testid='stException']").count() == 0
        assert w.real_errors() == []
    finally:
        w.page.close()


def test_the_live_refresh_reruns_the_overviews_live_fragment_not_the_page(
    browser: Any, dash_store: Path, tmp_path: Path
) -> None:
    """At ?refresh=5s the tick reruns the live fragment (its sections inline, at once), never the whole page;
    the sections that waited for the main chart ran once each, after the page's run."""
    log = tmp_path / "runs.tsv"
    with serve(dash_store, tmp_path / "server.log", HOPSCOPE_TIMING_LOG=str(log)) as url:
        w = PageWatch(browser)
        try:
            w.page.goto(f"{url}/?range=7d&refresh=5s")
            wait_for_chart(w.page, "End-to-end latency")
            w.page.wait_for_selector("[class*='st-key-panel_']", timeout=60_000)
            w.page.wait_for_timeout(11_000)  # two ticks at least
            assert w.page.locator("[data-testid='stException']").count() == 0
            assert w.page.get_by_text(first.PLACEHOLDER).count() == 0
            assert w.real_errors() == []
        finally:
            w.page.close()
    runs = _runs(log)
    later = ["overview_head#later", "overview_traffic#later", "overview_below#later"]
    start = min(runs.index(n) for n in later)
    assert [n for n in runs if "#" not in n], runs  # the page's own run ...
    assert not [n for n in runs[start:] if "#" not in n], (
        f"a tick reran the whole page: {runs}"
    )  # ... only first
    # Once the main chart was drawn, the three sections ran on their own: not inside a tick of the live
    # fragment (whose own line follows its sections').
    assert sorted(runs[start : start + 3]) == sorted(later), runs
    assert runs[start + 3 : start + 4] != ["overview#live"], runs
    # Then each tick reran the live fragment with its sections inline, drawn at once.
    ticks = [i for i, n in enumerate(runs) if n == "overview#live" and i > start]
    assert ticks, runs
    assert all(sorted(runs[i - 3 : i]) == sorted(later) for i in ticks), runs


def _runs(log: Path) -> list[str]:
    """The names of the runs in a $HOPSCOPE_TIMING_LOG so far (pages, fragments "page#live", sections "key#later")."""
    return [line.split("\t")[0] for line in log.read_text().splitlines()] if log.exists() else []
