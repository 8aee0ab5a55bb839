"""hopscope.markdown.literal: telemetry text stays text in every Markdown the dashboard and reports render."""

from __future__ import annotations

import re

import pytest

from hopscope.markdown import literal

ZOO = [
    "ms![b](http://127.0.0.1:9/beacon.png)[clk](http://127.0.0.1:9/)",
    "<img src=x onerror=alert(1)><script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "<http://127.0.0.1:9/auto>",
    "**bold** _em_ ~~gone~~ `code` $x$ # heading",
    "a|b\n| --- |\nnew line",
    "safe\u202egnp.exe",  # a right-to-left override
    "bell\x07null\x00esc\x1b[31m",
    "back\\slash\\*",
]
# A Markdown construct: an unescaped opener of a link, image, tag, code span, emphasis or autolink.
_LIVE = re.compile(r"(?<!\\)(?:\\\\)*[\[<`*_~$!]")


@pytest.mark.parametrize("text", ZOO)
def test_every_markdown_opener_is_escaped_and_invisible_characters_are_gone(text: str) -> None:
    out = literal(text)
    assert not _LIVE.search(out.replace("\\\\", "")), out
    assert not re.search("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]", out), repr(out)
    # what is left reads as the text: unescaping gives it back, less the invisible characters
    assert re.sub(r"\\(.)", r"\1", out) == re.sub("[\x00-\x08\x0b-\x1f\u202e]", "", text).replace("\n", " ")
