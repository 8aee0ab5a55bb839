"""Find SLO files, detect each document's format, and return :class:`SLO` records.

Formats: ``hopscope/v1`` (:mod:`~hopscope.slo.formats.hopscope`), OpenSLO ``v1`` and
``v1alpha`` (:mod:`~hopscope.slo.formats.openslo`), Sloth ``prometheus/v1`` and
``sloth.slok.dev/v1`` (:mod:`~hopscope.slo.formats.sloth`). :func:`load_slos` refuses
one bad file, document or SLO on its own, with a message naming the file and field,
and loads the rest. Composite SLOs are resolved once every file is read
(:func:`resolve_composites`): their components may live in other files.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import yaml

from hopscope.errors import SpecError
from hopscope.slo.formats import check, hopscope, openslo, sloth
from hopscope.slo.formats.check import At
from hopscope.slo.model import SLO, SPAN_KINDS, WindowTable

MAX_FILE_BYTES = 1_000_000
DEFAULT_RULES = Path("slo_rules")


# -- reading files ----------------------------------------------------------------------------


def read_yaml_docs(path: Path) -> list[object]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit for a spec file")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: is not UTF-8 text") from None
    return parse_yaml_text(text, str(path))


def parse_yaml_text(text: str, file: str) -> list[object]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{file}:{where}: not valid YAML ({problem})") from None


# -- window tables ----------------------------------------------------------------------------


def parse_window_table(doc: object, file: str, name: str | None = None) -> WindowTable:
    """A hopscope ``AlertWindows`` table, or Sloth's ``sloth.slok.dev/v1 AlertWindows``."""
    at = At(file)
    d = check.mapping(doc, at)
    if d.get("apiVersion") == sloth.API_VERSION:
        return sloth.parse_window_table(d, at, name)
    return hopscope.parse_window_table(d, at, name)


def load_window_tables(rules: Path | str = DEFAULT_RULES) -> tuple[dict[str, WindowTable], list[SpecError]]:
    """Every table under ``<rules>/alert_windows/*.yaml``, by name."""
    tables: dict[str, WindowTable] = {}
    errors: list[SpecError] = []
    folder = Path(rules) / "alert_windows"
    for f in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            t = parse_window_table(read_yaml_docs(f)[0], str(f))
            tables[t.name] = t
        except SpecError as e:
            errors.append(e)
    return tables, errors


_DEFAULT_TABLES: dict[str, WindowTable] | None = None


def default_window_tables() -> dict[str, WindowTable]:
    """The shipped tables: ``slo_rules/alert_windows`` next to this package's checkout."""
    global _DEFAULT_TABLES
    if _DEFAULT_TABLES is None:
        here = Path(__file__).resolve().parents[2] / "slo_rules"
        tables, _ = load_window_tables(here if here.is_dir() else DEFAULT_RULES)
        _DEFAULT_TABLES = tables
    return _DEFAULT_TABLES


# -- SLOs -------------------------------------------------------------------------------------


def parse_documents(
    docs: Sequence[object], file: str, tables: Mapping[str, WindowTable] | None = None
) -> tuple[list[SLO], list[SpecError]]:
    """Every SLO document of one file (hopscope/v1, OpenSLO or Sloth); each refused on its own."""
    tables = tables if tables is not None else default_window_tables()
    slos: list[SLO] = []
    errors: list[SpecError] = []
    peers: list[tuple[int, object]] = []
    for i, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("apiVersion") == hopscope.API_VERSION:
            if doc.get("kind") == "AlertWindows":
                continue
            try:
                slos.append(hopscope.parse_slo(doc, file, tables, doc_index=i))
            except SpecError as e:
                errors.append(e)
        elif doc is not None:  # an empty document holds nothing to refuse
            peers.append((i, doc))
    # Peer specs go in together: OpenSLO v1 documents refer to each other by name.
    named = openslo.named_objects(docs)
    for i, doc in peers:
        try:
            got, errs = _parse_peer(doc, At(file, doc=i), tables, named)
        except SpecError as e:
            errors.append(e)
            continue
        slos.extend(got)
        errors.extend(errs)
    return slos, errors


def _parse_peer(
    doc: object, at: At, tables: Mapping[str, WindowTable], named: Mapping[tuple[str, str], dict[str, object]]
) -> tuple[list[SLO], list[SpecError]]:
    """The SLOs of one Sloth or OpenSLO document (none for the kinds read through references)."""
    if not isinstance(doc, dict):
        raise at.fail(f"{check.short_repr(doc)} is not a mapping")
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if doc.get("version") == sloth.VERSION:
        return sloth.parse_slos(doc, at, tables, k8s=False)
    if api == sloth.API_VERSION and kind == "PrometheusServiceLevel":
        return sloth.parse_slos(doc.get("spec"), at / "spec", tables, k8s=True)
    if api == sloth.API_VERSION and kind == "AlertWindows":
        return [], []
    if api == openslo.V1ALPHA:
        if kind != "SLO":
            raise (at / "kind").fail(f"{kind!r} is not supported in openslo/v1alpha (only SLO)")
        return openslo.parse_v1alpha(doc, at, tables)
    if api == openslo.V1:
        if kind in openslo.REFERENCED_KINDS:
            return [], []
        if kind != "SLO":
            raise (at / "kind").fail(f"{kind!r} is not an OpenSLO v1 kind hopscope reads")
        return openslo.parse_v1(doc, at, tables, named)
    what = doc.get("version") if "version" in doc else api
    raise (at / ("version" if "version" in doc else "apiVersion")).fail(
        f"{what!r} is not a spec hopscope reads (hopscope/v1, openslo/v1, openslo/v1alpha, "
        "Sloth prometheus/v1, sloth.slok.dev/v1 PrometheusServiceLevel)"
    )


def load_slos(path: Path | str = DEFAULT_RULES) -> tuple[list[SLO], list[SpecError]]:
    """Every SLO under ``path`` (a folder of YAML files, or one file); bad ones are refused one by one."""
    p = Path(path)
    rules_dir = p if p.is_dir() else p.parent
    tables, errors = load_window_tables(rules_dir)
    if not tables:
        tables = default_window_tables()
    if p.is_dir():
        files = sorted(f for f in p.glob("*.y*ml") if f.is_file())
    elif p.exists():
        files = [p]
    else:
        return [], [SpecError(f"{p}: no such file or folder")]
    slos: list[SLO] = []
    seen: dict[str, Path | None] = {}
    named: set[str] = set()  # every hopscope/v1 SLO name written, refused ones included
    for f in files:
        try:
            docs = read_yaml_docs(f)
        except SpecError as e:
            errors.append(e)
            continue
        named |= {n for d in docs if (n := _doc_name(d)) is not None}
        got, errs = parse_documents(docs, str(f), tables)
        errors.extend(errs)
        for s in got:
            if s.name in seen:
                errors.append(
                    SpecError(f"{f}: metadata.name: {s.name!r} is already defined in {seen[s.name]}")
                )
                continue
            seen[s.name] = f
            slos.append(s)
    slos, refused = resolve_composites(slos, named - {s.name for s in slos})
    return slos, errors + refused


def _doc_name(doc: object) -> str | None:
    """metadata.name of a hopscope/v1 SLO document, whatever else is wrong with it."""
    if not isinstance(doc, dict) or doc.get("apiVersion") != hopscope.API_VERSION or doc.get("kind") != "SLO":
        return None
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def resolve_composites(
    slos: Sequence[SLO], refused: Collection[str] = ()
) -> tuple[list[SLO], list[SpecError]]:
    """Fill in each composite SLO's components (``Component.slo``); refuse, naming the file and the
    component, a composite with an unknown or refused component, one in a cycle, one whose component
    has another window, or one over a Prometheus-sourced component (hopscope does not count those).
    ``refused``: names of SLOs whose own document was refused (named as such, not as unknown)."""
    by_name = {s.name: s for s in slos}
    done: dict[str, SLO] = {}
    failed: dict[str, SpecError] = {}

    def at_of(slo: SLO, i: int) -> At:
        return At(str(slo.source_file or slo.name), "spec.sli.components") / i / "slo"

    def resolve(name: str, stack: list[str]) -> SLO | None:
        if name in done or name in failed:
            return done.get(name)
        slo = by_name[name]
        if not slo.composite:
            done[name] = slo
            return slo
        parts = []
        for i, c in enumerate(slo.sli.components):
            if c.name in stack or c.name == name:
                loop = [*stack[stack.index(c.name) :], name] if c.name in stack else [name]
                text = " -> ".join([*loop, c.name])
                for member in loop:
                    m = by_name[member]
                    j = next(k for k, x in enumerate(m.sli.components) if x.name in (*loop, c.name))
                    failed.setdefault(member, at_of(m, j).fail(f"composite SLOs form a cycle: {text}"))
                return None
            if c.name not in by_name and c.name in refused:
                failed[name] = at_of(slo, i).fail(f"{c.name!r} was refused (see its error)")
                return None
            if c.name not in by_name:
                known = ", ".join(sorted(n for n in by_name if n != name)) or "none"
                failed[name] = at_of(slo, i).fail(f"{c.name!r} is not an SLO (known: {known})")
                return None
            child = resolve(c.name, [*stack, name])
            if name in failed:  # a cycle through this SLO was found below
                return None
            if child is None:
                failed[name] = at_of(slo, i).fail(f"{c.name!r} was refused (see its error)")
                return None
            if child.sli.kind not in (*SPAN_KINDS, "composite"):
                failed[name] = at_of(slo, i).fail(
                    f"{c.name!r} is a {child.sli.kind} SLI, evaluated by Prometheus; a composite combines "
                    "SLOs hopscope counts (latency, availability, composite)"
                )
                return None
            if child.window != slo.window:
                failed[name] = at_of(slo, i).fail(
                    f"{c.name!r} has window {child.window.label}; the components of a composite share "
                    f"its window ({slo.window.label})"
                )
                return None
            parts.append(replace(c, slo=child))
        done[name] = replace(slo, sli=replace(slo.sli, components=tuple(parts)))
        return done[name]

    for s in slos:
        resolve(s.name, [])
    return [done[s.name] for s in slos if s.name in done], [failed[s.name] for s in slos if s.name in failed]
