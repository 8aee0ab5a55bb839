"""Telemetry text made literal in Markdown: the one escaping path of the dashboard and the reports.

    literal("ms![b](http://x/b.png)") == "ms\\!\\[b\\]\\(http\\:\\/\\/x\\/b\\.png\\)"

Service names, span names, label values and error messages come from whoever sends telemetry. Shown
through Markdown (Streamlit's st.markdown, captions, expander and link labels; `report --format md`)
they must not become links, images, HTML or emphasis, nor reorder the text around them.
"""

from __future__ import annotations

import re

# Every character Markdown (CommonMark + GitHub's extensions, as Streamlit renders it) gives a meaning:
# emphasis, code, links and images, headings, lists, tables, HTML, strikethrough, math, autolinks.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:/&=])")
# C0/C1 controls and the bidirectional overrides and isolates (a right-to-left mark can make a name
# read as another); line breaks become spaces: one label stays one line.
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BREAKS = re.compile(r"[\r\n\t]+")


def literal(text: object) -> str:
    """`text` as Markdown that renders as exactly its characters (less the invisible ones)."""
    return _SPECIAL.sub(r"\\\1", _BREAKS.sub(" ", _HIDDEN.sub("", str(text))))
