"""hopscope dashboard: `streamlit run dashboard/app.py -- --store PATH` (or $HOPSCOPE_STORE; default var/demo)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the repository root: a checkout
# without an install finds hopscope there (installed, hopscope is on the path already).
if importlib.util.find_spec("hopscope") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hopscope.dashboard import access, first, state  # noqa: E402
from hopscope.markdown import literal

PAGES = (
    ("pages/overview.py", "Overview", "overview"),
    ("pages/incident.py", "Incident", "incident"),
    ("pages/slo_report.py", "SLO report", "slo_report"),
    ("pages/hops.py", "Hops", "hops"),
    ("pages/resources.py", "Resources", "resources"),
    ("pages/collectors.py", "Collectors", "collectors"),
)

st.set_page_config(page_title="hopscope", layout="wide")
access.require_sign_in()  # Streamlit's OIDC login, where .streamlit/secrets.toml configures one
here = Path(__file__).parent
pages = [
    # No page icons: Streamlit turns the page's icon into the favicon, fetched from the internet.
    st.Page(path, title=title, url_path=url, default=(url == "overview"))
    for path, title, url in PAGES
    if (here / path).exists()
]
nav = st.navigation(pages)
st.sidebar.caption(f"store: {literal(state.store_path())}")
state.restore_shared_params()
first.new_visit(nav.url_path)  # a page's secondary sections wait for its main chart once per visit
with state.timed(nav.url_path):
    try:
        nav.run()
    finally:  # also after st.stop / st.rerun / st.switch_page, which raise through here
        state.save_shared_params()
