"""What `hopscope dashboard` runs: `streamlit run dashboard/serve.py` serves app.py as an `st.App` behind
dashboard/access.py's middleware (security headers; the trusted user header where configured)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

# Run as a script, this file's folder is on sys.path and the repository root may not be (see app.py).
if importlib.util.find_spec("hopscope") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hopscope.dashboard.access import AccessGuard, from_environment  # noqa: E402

app = st.App(Path(__file__).with_name("app.py"), middleware=[Middleware(AccessGuard, **from_environment())])
