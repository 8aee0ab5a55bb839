"""Field checks the SLO formats share: each reads one value and refuses it with a SpecError.

The message names the file, the path inside it (:class:`At`) and the bad value:
``slo_rules/x.yaml: spec.objective: 99.9 is not a ratio in (0, 1); write 0.999``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hopscope.durations import parse_duration
from hopscope.errors import SpecError


class At:
    """A position inside a spec file, for messages: ``file: spec.sli.kind: 'x' ...``."""

    def __init__(self, file: str, path: str = "", doc: int = 0) -> None:
        self.file, self.path, self.doc = file, path, doc

    def __truediv__(self, key: str | int) -> At:
        sub = f"[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else str(key))
        if isinstance(key, int):
            sub = f"{self.path}{sub}"
        return At(self.file, sub, self.doc)

    def where(self) -> str:
        doc = f" (document {self.doc + 1})" if self.doc else ""
        return f"{self.file}{doc}: {self.path}" if self.path else f"{self.file}{doc}"

    def fail(self, msg: str) -> SpecError:
        return SpecError(f"{self.where()}: {msg}")


def mapping(v: object, at: At, allowed: Iterable[str] | None = None) -> dict[str, object]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise at.fail(f"{short_repr(v)} is not a mapping")
    if allowed is not None:
        allowed = tuple(allowed)
        for k in v:
            if k not in allowed:
                raise (at / str(k)).fail(f"unknown field; expected one of {', '.join(allowed)}")
    return v


def short_repr(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def text(v: object, at: At, *, required: bool = False) -> str | None:
    if v is None:
        if required:
            raise at.fail("is required")
        return None
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise at.fail(f"{short_repr(v)} is not text")
    return str(v)


def ratio(v: object, at: At) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise at.fail(f"{short_repr(v)} is not a ratio in (0, 1)")
    f = float(v)
    if not 0 < f < 1:
        hint = f"; write {f / 100:g}" if 1 < f < 100 else ""
        raise at.fail(f"{v!r} is not a ratio in (0, 1){hint}")
    return f


def positive(v: object, at: At) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v) > 0 or float(v) != float(v):
        raise at.fail(f"{short_repr(v)} is not a positive number")
    return float(v)


def duration(v: object, at: At) -> timedelta:
    try:
        return parse_duration(v)
    except ValueError as e:
        raise at.fail(str(e)) from None


def labels(v: object, at: At) -> dict[str, str]:
    m = mapping(v, at)
    return {str(k): str(val) for k, val in m.items()}


def time_zone(v: object, at: At) -> str:
    name = text(v, at) or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise at.fail(f"{name!r} is not a time zone (IANA name like Europe/Paris)") from None
    return name


def percent_ratio(value: object) -> float:
    """A percentage as a ratio without binary noise: 99.9 -> 0.999 (not 0.9990000000000001)."""
    return round(float(value) / 100, 12)  # type: ignore[arg-type]
