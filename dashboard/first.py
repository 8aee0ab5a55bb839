"""The main chart first: a page's secondary sections wait in fragments until the browser has drawn its main chart.

A browser draws the Plotly charts that reach it together (the first waits for Plotly's JavaScript, and
then for the others that came meanwhile), so sending a page's eleven charts at once makes its main
chart wait for the eleventh. Here the page draws its main chart (main_chart), each secondary section
(a @later fragment) draws a placeholder, and a small component in the page tells the server once the
main chart's SVG is in the document; only then do the @later fragments run, and only they.

This happens once per visit of a page (a new tab, a click in the sidebar, a link from another page);
the page's later reruns (a filter, a live refresh tick) draw everything in one go, in place.
Without a browser (AppTest) there is nothing to wait for: the sections run at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

import plotly.graph_objects as go
import streamlit as st

from hopscope.dashboard import state

P = ParamSpec("P")

_VISIT = "_first_visit"  # the page of this visit
_DRAWN = "_first_drawn"  # True once the browser has drawn this visit's main chart
_PENDING = "_first_pending"  # keys of the @later fragments that drew a placeholder this visit
PLACEHOLDER = "Loading…"

# Fires once the main chart's SVG is in the document, one frame after it is painted; or at once when the
# page has no main chart; or after timeout_ms whatever happens, so that a chart that never draws (a
# Plotly error) does not keep the rest of the page away.
_JS = """
export default function (component) {
  const { data, setTriggerValue } = component;
  let done = false;
  const fire = () => { if (!done) { done = true; setTriggerValue("drawn", true); } };
  const t0 = performance.now();
  const look = () => {
    if (done) return;
    if (!data.selector || document.querySelector(data.selector) || performance.now() - t0 > data.timeout_ms) {
      requestAnimationFrame(() => setTimeout(fire, 0));
      return;
    }
    requestAnimationFrame(look);
  };
  look();
  return () => { done = true; };
}
"""
_CSS = ":host { display: none; }"
_signal = st.components.v2.component("hopscope_main_drawn", html="<span></span>", css=_CSS, js=_JS)
TIMEOUT_MS = 20_000


def new_visit(page: str) -> None:
    """app.py, before each run of a page: a run of another page than the last one starts a visit."""
    if st.session_state.get(_VISIT) != page:
        st.session_state[_VISIT] = page
        st.session_state[_DRAWN] = False
        st.session_state[_PENDING] = []


def waiting() -> bool:
    """Whether this visit's secondary sections still wait for the browser to draw the main chart."""
    if not st.context.headers:  # no browser (AppTest): nobody would ever say the chart is drawn
        return False
    return not st.session_state.get(_DRAWN, False)


def main_chart(fig: go.Figure, key: str, **options: object) -> None:
    """state.chart(fig, key, ...) as the page's main chart: the @later sections follow once it is drawn."""
    state.chart(fig, key, **options)  # type: ignore[arg-type]
    arm(key)


def arm(key: str) -> None:
    """The chart drawn with state.chart(..., key) is this run's main chart: the @later sections wait for it."""
    _arm(f".st-key-{key} .js-plotly-plot .main-svg")


def no_main_chart() -> None:
    """This run has no main chart (no data in range): the @later sections need not wait for one."""
    _arm(None)


def _arm(selector: str | None) -> None:
    if waiting():
        _signal(
            data={"selector": selector, "timeout_ms": TIMEOUT_MS},
            key="_first_signal",
            on_drawn_change=_drawn,
        )


def _drawn() -> None:
    """The browser drew the main chart: rerun the sections that drew a placeholder (a fragment rerun each)."""
    st.session_state[_DRAWN] = True
    pending = list(dict.fromkeys(st.session_state.get(_PENDING, [])))
    st.session_state[_PENDING] = []
    if pending:
        st.rerun(scope=pending)


def later(key: str) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """A secondary section: a fragment (named `key`) that draws once the page's main chart is drawn.

    Its rerun (when the chart is drawn, or a widget inside it changes) uses the arguments of its last call.
    """

    def wrap(body: Callable[P, None]) -> Callable[P, None]:
        @st.fragment(key=key)
        @functools.wraps(body)
        def section(*args: P.args, **kwargs: P.kwargs) -> None:
            if waiting():
                st.caption(PLACEHOLDER)
                st.session_state.setdefault(_PENDING, []).append(key)
                return
            with state.timed(f"{key}#later"):  # its own line in $HOPSCOPE_TIMING_LOG, not a page run
                body(*args, **kwargs)

        return section

    return wrap
