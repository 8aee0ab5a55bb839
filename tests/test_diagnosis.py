"""Diagnosis on small hand-built stores whose answers are known by construction."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from support.demo import DEMO_TARGET

from hopscope import histogram
from hopscope.catalog import load_catalog, parse_catalog
from hopscope.config import configured_catalog
from hopscope.diagnosis import VERDICT_CAUSE, VERDICT_NONE, diagnose, target_kwargs
from hopscope.diagnosis.baseline import burning_span, candidate_windows
from hopscope.diagnosis.bubbleup import bubbleup, focus_offsets, load_bubble_counts
from hopscope.diagnosis.cache import CACHE
from hopscope.diagnosis.cli import _change, render
from hopscope.diagnosis.core import MIN_SHARE, _evidence_phrase, _fmt
from hopscope.diagnosis.hops import decompose_hops, end_to_end, end_to_end_errors, error_matrix, hop_matrix
from hopscope.diagnosis.model import Evidence, Target
from hopscope.diagnosis.resources import score_series
from hopscope.diagnosis.series import load_linked_grid
from hopscope.errors import ConfigError, NotFoundError, SpecError, StoreError
from hopscope.model import TimeRange
from hopscope.signals import load_series, load_series_grid
from hopscope.slo import load_slos
from hopscope.store import Store

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "incident-schema.json").read_text())
T0 = datetime(2026, 3, 1)
# per-request mean ms of each hop in the baseline
HOPS = {
    "api-gateway": 8.0,
    "api-gateway->feature-store": 2.0,
    "feature-store": 20.0,
    "api-gateway->model-server": 4.0,
    "model-server": 60.0,
}
HIDDEN = "untraced"  # a part of the end-to-end latency on no hop (the residual)


@dataclass
class Effect:
    start: datetime
    end: datetime
    hop_ms: dict[str, float] = field(default_factory=dict)  # added per-request ms
    signals: dict[str, float] = field(default_factory=dict)  # metric -> value during the effect
    traffic: float = 1.0
    errors: dict[str, float] = field(default_factory=dict)  # server of an edge -> error rate of its calls


def _requests(
    rng: np.random.Generator, minutes: pd.DatetimeIndex, effects: list[Effect], rate: int
) -> pd.DataFrame:
    n_per = np.full(len(minutes), rate)
    for e in effects:
        m = (minutes >= e.start) & (minutes < e.end)
        n_per[m] = int(rate * e.traffic)
    minute = np.repeat(minutes.to_numpy(), n_per)
    df = pd.DataFrame({"minute": minute})
    for h, mean in HOPS.items():
        df[h] = rng.gamma(4.0, mean / 4.0, len(df))
    df[HIDDEN] = 0.0  # time on no hop (an untraced queue in front of the gateway): only effects add it
    for server in ("feature-store", "model-server"):
        df[f"err:{server}"] = rng.random(len(df)) < 0.0005
    for e in effects:
        m = (df["minute"] >= e.start) & (df["minute"] < e.end)
        for h, add in e.hop_ms.items():
            df.loc[m, h] += rng.gamma(4.0, add / 4.0, int(m.sum()))
        for server, p in e.errors.items():
            df.loc[m, f"err:{server}"] |= rng.random(int(m.sum())) < p
    df["err:api-gateway"] = df["err:feature-store"] | df["err:model-server"]
    return df


def _rows(
    df: pd.DataFrame, client: str, server: str, gap: str | None, self_col: str, below: list[str]
) -> pd.DataFrame:
    dur = df[self_col] + (df[gap] if gap else 0.0) + sum((df[b] for b in below), 0.0)
    tmp = pd.DataFrame(
        {"minute": df["minute"], "dur": dur, "gap": df[gap] if gap else 0.0, "self": df[self_col],
         "err": df[f"err:{server}"].astype(int)}
    )  # fmt: skip
    tmp["idx"] = histogram.bucket_index(tmp["dur"].to_numpy())
    tmp["good"] = (tmp["dur"] <= 200.0).astype(int)
    g = tmp.groupby("minute")
    out = pd.DataFrame(
        {
            "count": g.size(),
            "errors": g["err"].sum(),
            "duration_ms_sum": g["dur"].sum(),
            "duration_ms_max": g["dur"].max(),
            "gap_ms_sum": g["gap"].sum(),
            "self_ms_sum": g["self"].sum(),
            "good": g["good"].sum(),
        }
    ).reset_index()
    hist = tmp.groupby(["minute", "idx"]).size().rename("cnt").reset_index()
    lists = hist.groupby("minute").agg(hist_idx=("idx", list), hist_cnt=("cnt", list))
    out = out.join(lists, on="minute")
    out["client"], out["server"], out["route"] = client, server, "/recommend"
    out["client_ms_sum"] = out["duration_ms_sum"] if gap else 0.0
    out["server_ms_sum"] = out["duration_ms_sum"] - out["gap_ms_sum"]
    out["skewed"] = 0
    out["good_le_ms"] = [[200.0]] * len(out)
    out["good_cnt"] = [[int(x)] for x in out.pop("good")]
    out["exemplars"] = [[f"{random.Random(str(m) + server).getrandbits(128):032x}"] for m in out["minute"]]
    return out


SIGNALS = [
    # metric, service, host, labels, baseline, noise
    ("node_network_transmit_bytes_total", "api-gateway", "gw-1", {"device": "eth0"}, 40e6, 4e6),
    ("node_network_speed_bytes", "api-gateway", "gw-1", {"device": "eth0"}, 125e6, 0.0),
    ("node_netstat_Tcp_RetransSegs", "api-gateway", "gw-1", {}, 1.0, 0.3),
    ("DCGM_FI_DEV_GPU_UTIL", "model-server", "gpu-1", {"gpu": "0", "UUID": "GPU-a"}, 45.0, 5.0),
    ("DCGM_FI_DEV_SM_CLOCK", "model-server", "gpu-1", {"gpu": "0", "UUID": "GPU-a"}, 1980.0, 10.0),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "model-server", "gpu-1", {"gpu": "0", "UUID": "GPU-a"}, 0.0, 0.0),
    ("DCGM_FI_DEV_FB_USED", "model-server", "gpu-1", {"gpu": "0", "UUID": "GPU-a"}, 40000.0, 300.0),
    ("DCGM_FI_DEV_FB_FREE", "model-server", "gpu-1", {"gpu": "0", "UUID": "GPU-a"}, 40000.0, 300.0),
    ("redis_memory_used_bytes", "feature-store", "fs-1", {}, 5e9, 1e8),
    ("redis_memory_max_bytes", "feature-store", "fs-1", {}, 8e9, 0.0),
    ("redis_keyspace_misses_total", "feature-store", "fs-1", {}, 5.0, 1.0),
    ("node_cpu_utilization_ratio", "feature-store", "fs-1", {}, 0.3, 0.03),
]


def _samples(
    rng: np.random.Generator,
    start: datetime,
    end: datetime,
    effects: list[Effect],
    drop: set[str],
    signals: list[tuple[str, str, str, dict[str, str], float, float]] = SIGNALS,
) -> pa.Table:
    ts = pd.date_range(start, end, freq="30s", inclusive="left")
    cat = load_catalog()
    parts = []
    for metric, svc, host, labels, base, noise in signals:
        if any(metric.startswith(d) for d in drop):
            continue
        v = base + rng.normal(0, noise, len(ts)) if noise else np.full(len(ts), base)
        for e in effects:
            if metric in e.signals:
                m = (ts >= e.start) & (ts < e.end)
                v[m] = e.signals[metric] + (rng.normal(0, noise, int(m.sum())) if noise else 0)
        info = cat.get(metric)  # a metric only a user's catalog declares: a gauge here
        if info is not None and info.is_counter:
            v = np.cumsum(np.maximum(v, 0) * 30.0)
        parts.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "metric": metric,
                    "value": v,
                    "source": "test",
                    "service": svc,
                    "host": host,
                    "labels": [list(labels.items())] * len(ts),
                }
            )
        )
    df = pd.concat(parts, ignore_index=True)
    labels = pa.array(df.pop("labels").tolist(), pa.map_(pa.string(), pa.string()))
    return pa.Table.from_pandas(df, preserve_index=False).append_column("labels", labels)


def build_store(
    path: Path,
    effects: list[Effect],
    *,
    days: int = 3,
    rate: int = 20,
    seed: int = 7,
    drop: set[str] = frozenset(),
    edit_edges: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    extra_signals: Sequence[tuple[str, str, str, dict[str, str], float, float]] = (),
) -> Store:
    rng = np.random.default_rng(seed)
    end = T0 + timedelta(days=days)
    minutes = pd.date_range(T0, end, freq="1min", inclusive="left")
    req = _requests(rng, minutes, effects, rate)
    edges = pd.concat(
        [
            _rows(
                req,
                "",
                "api-gateway",
                None,
                "api-gateway",
                [
                    "api-gateway->feature-store",
                    "feature-store",
                    "api-gateway->model-server",
                    "model-server",
                    HIDDEN,
                ],
            ),
            _rows(req, "api-gateway", "feature-store", "api-gateway->feature-store", "feature-store", []),
            _rows(req, "api-gateway", "model-server", "api-gateway->model-server", "model-server", []),
        ],
        ignore_index=True,
    )
    if edit_edges is not None:
        edges = edit_edges(edges)
    store = Store(path)
    store.append("hop_minutes", edges)
    store.append("samples", _samples(rng, T0, end, effects, set(drop), [*SIGNALS, *extra_signals]))
    return store


def _at(day: int, hour: int, minutes: int = 60) -> tuple[datetime, datetime]:
    start = T0 + timedelta(days=day, hours=hour)
    return start, start + timedelta(minutes=minutes)


# One store holds every case, each at its own hour of day 3 (3 h apart, so no case lies in another's
# baseline: the previous hour and the same hours of days 0-2 stay clean unless a case says otherwise).
CASES = [
    # name, effect, expected (hop, dimension)
    (
        "network_bandwidth",
        Effect(
            *_at(3, 1),
            hop_ms={"api-gateway->model-server": 200.0},
            signals={"node_network_transmit_bytes_total": 123e6, "node_netstat_Tcp_RetransSegs": 60.0},
        ),
        ("api-gateway->model-server", "bandwidth"),
    ),
    (
        "gpu_thermal",
        Effect(
            *_at(3, 4),
            hop_ms={"model-server": 250.0},
            signals={"DCGM_FI_DEV_SM_CLOCK": 900.0, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": 0x40},
        ),
        ("model-server", "compute"),
    ),
    (
        "feature_store_memory",
        Effect(
            *_at(3, 7),
            hop_ms={"feature-store": 220.0},
            signals={"redis_memory_used_bytes": 7.9e9, "redis_keyspace_misses_total": 400.0},
        ),
        ("feature-store", "memory"),
    ),
    ("no_signal", Effect(*_at(3, 10), hop_ms={"api-gateway": 230.0}), ("api-gateway", "unknown")),
]
TWO_CAUSES = Effect(
    *_at(3, 13),
    hop_ms={"model-server": 200.0, "feature-store": 150.0},
    signals={
        "DCGM_FI_DEV_SM_CLOCK": 900.0,
        "redis_memory_used_bytes": 7.9e9,
        "redis_keyspace_misses_total": 400.0,
    },
)
BUSY = Effect(
    *_at(3, 16),
    traffic=3.0,
    signals={"DCGM_FI_DEV_GPU_UTIL": 85.0, "node_network_transmit_bytes_total": 90e6},
    hop_ms={"model-server": 5.0},
)
EARLIER = Effect(*_at(2, 19), hop_ms={"feature-store": 300.0})  # degrades the -1d baseline of NOW
NOW = Effect(*_at(3, 19), hop_ms={"model-server": 250.0}, signals={"DCGM_FI_DEV_SM_CLOCK": 900.0})
FAILING = Effect(
    *_at(3, 22), errors={"model-server": 0.05}
)  # an availability breach: calls into model-server fail
EARLY = Effect(T0 + timedelta(minutes=1), T0 + timedelta(minutes=31), hop_ms={"model-server": 300.0})
ALL = [c[1] for c in CASES] + [TWO_CAUSES, BUSY, EARLIER, NOW, FAILING, EARLY]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_store(tmp_path_factory.mktemp("diag") / "s", ALL, days=4)


@pytest.mark.parametrize("name,effect,expected", CASES, ids=[c[0] for c in CASES])
def test_diagnose_names_the_hop_and_resource_that_was_degraded(
    store: Store, name: str, effect: Effect, expected: tuple[str, str]
) -> None:
    d = diagnose(store, **DEMO_TARGET, start=effect.start, end=effect.end)
    assert d.verdict == VERDICT_CAUSE, d.notes
    top = d.causes[0]
    assert (top.hop, top.dimension) == expected, [(c.hop, c.dimension, c.score) for c in d.causes]
    assert top.share > 0.6
    doc = d.to_dict()
    jsonschema.validate(doc, SCHEMA)
    # shares of the ranked hops add up to the total added latency
    rows = doc["decomposition"]["hops"]
    assert doc["decomposition"]["measure"] == "latency"
    assert sum(r["share_of_added_latency"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    added = sum(r["added_ms"] for r in rows)
    assert added + doc["decomposition"]["residual_ms"] == pytest.approx(
        doc["decomposition"]["end_to_end"]["added_mean_ms"], abs=0.01
    )
    if expected[1] != "unknown":
        assert top.evidence and top.evidence[0].dimension == expected[1]
    assert d.exemplars and all(len(t) == 32 for t in d.exemplars)
    assert [name for name, _ in d.timings_ms][0] == "hop_minutes query"


def test_healthy_window_gives_no_clear_cause(store: Store) -> None:
    d = diagnose(store, **DEMO_TARGET, start=BUSY.start, end=BUSY.end)
    assert d.verdict == VERDICT_NONE
    assert d.causes == ()
    assert any("SLI" in n for n in d.notes)
    jsonschema.validate(d.to_dict(), SCHEMA)


def test_missing_gpu_data_is_reported_as_not_judged(tmp_path: Path) -> None:
    effect = Effect(*_at(1, 10), hop_ms={"model-server": 250.0})
    small = build_store(tmp_path / "s", [effect], days=2, rate=10, drop={"DCGM_"})
    d = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end)
    top = d.causes[0]
    assert (top.hop, top.dimension) == ("model-server", "unknown")
    assert set(top.not_judged) == {"compute", "bandwidth", "memory"}
    assert any("model-server: no compute signal" in n for n in d.notes)


def test_two_simultaneous_causes_are_both_ranked(store: Store) -> None:
    d = diagnose(store, **DEMO_TARGET, start=TWO_CAUSES.start, end=TWO_CAUSES.end)
    got = [(c.hop, c.dimension) for c in d.causes[:2]]
    assert got == [("model-server", "compute"), ("feature-store", "memory")]
    assert d.causes[0].share + d.causes[1].share == pytest.approx(1.0, abs=0.1)


def test_a_small_second_fault_is_named_when_its_own_time_rose_many_fold_at_a_resource_limit(
    tmp_path: Path,
) -> None:
    # the big fault: model-server's clock; the small one: feature-store +70 ms (4.5x its 20 ms, ~14 % of
    # the rise, under MIN_SHARE) with its cache missing; api-gateway +30 ms (4.75x) with nothing at a limit
    effect = Effect(
        *_at(1, 10),
        hop_ms={"model-server": 400.0, "feature-store": 70.0, "api-gateway": 30.0},
        signals={"DCGM_FI_DEV_SM_CLOCK": 900.0, "redis_keyspace_misses_total": 400.0},
    )
    small = build_store(tmp_path / "s", [effect], days=2, rate=10)
    d = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end)
    shares = {h.hop: h.share for h in d.decomposition.hops} if d.decomposition else {}
    assert shares["feature-store"] < MIN_SHARE and shares["api-gateway"] < MIN_SHARE, shares
    got = [(c.hop, c.dimension) for c in d.causes[:2]]
    assert got == [("model-server", "compute"), ("feature-store", "memory")], d.causes
    assert "redis_keyspace_misses_total" in d.causes[1].summary and "4." in d.causes[1].summary
    assert "api-gateway" not in {c.hop for c in d.causes}  # rose many-fold, but no resource at its limit


def test_too_little_baseline_is_reported_not_guessed(store: Store) -> None:
    d = diagnose(store, **DEMO_TARGET, start=EARLY.start, end=EARLY.end)
    assert d.verdict == VERDICT_NONE
    assert not d.baseline.sufficient
    assert "baseline" in d.notes[0]


def test_degraded_baseline_windows_are_left_out_with_a_reason(store: Store) -> None:
    d = diagnose(store, **DEMO_TARGET, start=NOW.start, end=NOW.end)
    left_out = [w for w in d.baseline.windows if not w.used and w.requests]
    assert [w.kind for w in left_out] == ["same_hours_-1d"]
    assert "degraded" in left_out[0].reason
    assert (d.causes[0].hop, d.causes[0].dimension) == ("model-server", "compute")


def test_availability_breach_is_decomposed_into_errors_by_the_service_they_start_in(store: Store) -> None:
    d = diagnose(
        store, **DEMO_TARGET, start=FAILING.start, end=FAILING.end, sli_kind="availability", objective=0.999
    )
    assert d.verdict == VERDICT_CAUSE, d.notes
    top = d.causes[0]
    assert (top.hop, top.hop_kind, top.share_of) == ("model-server", "service", "errors")
    assert top.share > 0.9 and "added errors" in top.summary
    doc = d.to_dict()
    jsonschema.validate(doc, SCHEMA)
    dec = doc["decomposition"]
    assert dec["measure"] == "errors" and dec["end_to_end"]["incident_error_fraction"] > 0.04
    assert {r["unit"] for r in dec["hops"]} == {"errors per request"}
    assert any("decomposition is of the added errors" in n for n in d.notes)
    # the same window judged on latency: nothing is slower, so no cause is invented
    assert (
        diagnose(store, **DEMO_TARGET, start=FAILING.start, end=FAILING.end, with_bubbleup=False).verdict
        == VERDICT_NONE
    )


def test_unknown_route_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="/nope"):
        diagnose(
            store,
            **{**DEMO_TARGET, "route": "/nope"},
            start=T0 + timedelta(hours=20),
            end=T0 + timedelta(hours=21),
        )


# -- pure parts -----------------------------------------------------------------------------------


def test_candidate_windows_are_previous_then_same_hours_without_overlap() -> None:
    start, end = datetime(2026, 3, 10, 14), datetime(2026, 3, 10, 15)
    kinds = [k for _, k in candidate_windows(start, end, days=3)]
    assert kinds == ["previous", "same_hours_-1d", "same_hours_-2d", "same_hours_-3d"]
    long = [k for _, k in candidate_windows(datetime(2026, 3, 10), datetime(2026, 3, 11), days=3)]
    assert long == ["previous", "same_hours_-2d", "same_hours_-3d"]


def test_decompose_hops_splits_added_latency_exactly_for_hand_built_frame() -> None:
    rows = []
    for w, (fs, ms) in enumerate([(20.0, 100.0), (20.0, 60.0), (20.0, 60.0), (20.0, 60.0)]):
        for k in range(10):
            ts = datetime(2026, 1, 1, 0, k)
            n = 10
            rows += [
                (w, ts, "", "api-gateway", n, (5 + 2 + fs + 3 + ms) * n, 0.0, 5.0 * n),
                (w, ts, "api-gateway", "feature-store", n, (2 + fs) * n, 2.0 * n, fs * n),
                (w, ts, "api-gateway", "model-server", n, (3 + ms) * n, 3.0 * n, ms * n),
            ]
    frame = pd.DataFrame(
        rows,
        columns=["window", "ts", "client", "server", "count", "duration_ms_sum", "gap_ms_sum", "self_ms_sum"],
    )
    target = Target(**DEMO_TARGET)
    wide, kinds = hop_matrix(frame, target)
    assert kinds == {
        "api-gateway": "service", "feature-store": "service", "model-server": "service",
        "api-gateway->feature-store": "network", "api-gateway->model-server": "network",
    }  # fmt: skip
    empty_hist = pd.DataFrame(columns=["window", "idx", "cnt"])
    empty_bad = pd.DataFrame(columns=["window", "ts", "total", "bad"])
    e2e = end_to_end(
        empty_hist, empty_bad, wide, [1, 2, 3], 0, Target(service="api-gateway", route="/recommend")
    )
    assert e2e.added_mean_ms == pytest.approx(40.0)
    dec = decompose_hops(wide, kinds, [1, 2, 3], 0, e2e, target)
    top = dec.hops[0]
    assert (top.hop, top.added_ms, top.share, top.significant) == (
        "model-server",
        pytest.approx(40.0),
        pytest.approx(1.0),
        True,
    )
    assert dec.residual_ms == pytest.approx(0.0)


def test_bubbleup_finds_the_over_represented_value_and_buckets_numbers() -> None:
    counts = pd.DataFrame(
        [("host.name", "gpu-2", 80, 100), ("host.name", "gpu-1", 20, 100)]
        + [("payload.bytes", str(1000 + i), 1, 5) for i in range(30)]
        + [("request.id", f"id{i}", 1, 1) for i in range(30)],
        columns=["attribute", "value", "slow_n", "base_n"],
    )
    attrs, note = bubbleup(counts, slow_total=100, base_total=200)
    assert attrs[0].attribute == "host.name" and attrs[0].value == "gpu-2"
    assert attrs[0].incident_slow_fraction == pytest.approx(0.8)
    assert all(a.attribute != "request.id" for a in attrs)
    empty, why = bubbleup(counts, slow_total=3, base_total=200)
    assert empty == [] and "too few" in why


def test_bubbleup_lists_tied_attributes_in_a_fixed_order_whatever_the_row_order() -> None:
    rows = [
        ("server.address", "gpu-2", 80, 10),
        ("host.name", "gpu-2", 80, 10),
        ("gpu.uuid", "GPU-2", 80, 10),
    ]
    cols = ["attribute", "value", "slow_n", "base_n"]
    orders = [
        bubbleup(pd.DataFrame(r, columns=cols), slow_total=100, base_total=100)[0] for r in (rows, rows[::-1])
    ]
    assert (
        [a.attribute for a in orders[0]]
        == [a.attribute for a in orders[1]]
        == [
            "gpu.uuid",
            "host.name",
            "server.address",
        ]
    )


def test_load_series_turns_counters_into_rates_across_a_reset(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    ts = [T0 + timedelta(seconds=15 * i) for i in range(8)]
    values = [0.0, 150.0, 300.0, 450.0, 150.0, 300.0, 450.0, 600.0]  # restarted from 0 before the 5th sample
    store.append(
        "samples",
        pa.table(
            {
                "ts": pa.array(ts, pa.timestamp("us")),
                "metric": ["node_network_receive_bytes_total"] * 8,
                "value": values,
                "source": ["test"] * 8,
                "service": ["api-gateway"] * 8,
                "host": ["gw-1"] * 8,
                "labels": pa.array([[("device", "eth0")]] * 8, pa.map_(pa.string(), pa.string())),
            }
        ),
    )
    df = load_series(store, [TimeRange(T0, T0 + timedelta(minutes=2))], step_s=60)
    assert df["value"].tolist() == pytest.approx([10.0, 10.0])
    assert (
        df["series"].iloc[0]
        == 'node_network_receive_bytes_total{service="api-gateway",host="gw-1",device="eth0"}'
    )


def _sample_rows(rows: list[tuple[datetime, str, float, str | None, str | None, dict[str, str]]]) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([r[0] for r in rows], pa.timestamp("us")),
            "metric": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "source": ["test"] * len(rows),
            "service": [r[3] for r in rows],
            "host": [r[4] for r in rows],
            "labels": pa.array([list(r[5].items()) for r in rows], pa.map_(pa.string(), pa.string())),
        }
    )


def test_load_series_grid_reads_linked_series_of_aligned_windows_into_one_array(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    w0 = TimeRange(T0 + timedelta(days=1), T0 + timedelta(days=1, minutes=3))
    w1 = TimeRange(T0, T0 + timedelta(minutes=3))
    rows = []
    for w, level in ((w0, 90.0), (w1, 40.0)):
        for k in range(6):  # every 30 s: two samples per 1-minute bucket
            ts = w.start + timedelta(seconds=30 * k)
            gpu = {"gpu": "0", "UUID": "GPU-a"}
            rows += [
                (ts, "DCGM_FI_DEV_GPU_UTIL", level + k % 2, "model-server", "gpu-1", gpu),
                (
                    ts,
                    "node_network_receive_bytes_total",
                    600.0 * k,
                    None,
                    "gpu-1",
                    {"device": "eth0"},
                ),  # no service
                (ts, "probe_success", 1.0, None, "prober", {"target": "http://gpu-1:8000/healthz"}),
                (ts, "probe_success", 1.0, None, "prober", {"target": "http://fs-1:6566/healthz"}),
                (ts, "DCGM_FI_DEV_GPU_UTIL", 5.0, "other", "gpu-9", gpu),
            ]
    store.append("samples", _sample_rows(rows))
    grid = load_series_grid(
        store,
        [w0, w1],
        step_s=60,
        services=["model-server"],
        hosts_of=["model-server"],
        probe_targets=["gpu-1"],
    )
    assert grid.values.shape == (3, 2, 3)  # series x windows x buckets
    meta = grid.meta.set_index("series")
    util = grid.values[
        meta.index.get_loc('DCGM_FI_DEV_GPU_UTIL{service="model-server",host="gpu-1",UUID="GPU-a",gpu="0"}')
    ]
    assert util[0] == pytest.approx([90.5] * 3) and util[1] == pytest.approx([40.5] * 3)
    rx = grid.values[meta.index.get_loc('node_network_receive_bytes_total{host="gpu-1",device="eth0"}')]
    assert rx[0][1:] == pytest.approx([20.0, 20.0])  # 600 per 30 s; a rate needs a previous sample
    assert meta.loc['probe_success{host="prober",target="http://gpu-1:8000/healthz"}', "labels"] == {
        "target": "http://gpu-1:8000/healthz"
    }
    with pytest.raises(StoreError, match="step_s"):
        load_series_grid(store, [w0], step_s=0)
    with pytest.raises(StoreError, match="not after its start"):
        TimeRange(w0.end, w0.start)


@pytest.mark.parametrize(
    "services,probe_targets",
    [
        (["model-server"], ["model-server"]),
        (["model-server"], ["gpu-1"]),
        (["feature-store"], ["feature-store", "fs-1"]),
        (["feature-store", "model-server"], []),
        ([], ["gpu-1"]),
    ],
)
def test_linked_grid_reads_in_one_scan_what_load_series_grid_reads_in_several(
    tmp_path: Path, services: list[str], probe_targets: list[str]
) -> None:
    store = Store(tmp_path / "s")
    w0 = TimeRange(T0 + timedelta(days=1), T0 + timedelta(days=1, minutes=4))
    w1 = TimeRange(T0, T0 + timedelta(minutes=4))
    rows = []
    for w, level in ((w0, 90.0), (w1, 40.0)):
        for k in range(8):
            ts = w.start + timedelta(seconds=30 * k)
            gpu = {"gpu": "0", "UUID": "GPU-a"}
            rows += [
                (ts, "DCGM_FI_DEV_GPU_UTIL", level + k % 2, "model-server", "gpu-1", gpu),
                (
                    ts,
                    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
                    float(0x40 if k % 2 else 0x1),
                    "model-server",
                    "gpu-1",
                    gpu,
                ),
                (ts, "node_network_receive_bytes_total", 600.0 * k, None, "gpu-1", {"device": "eth0"}),
                (ts, "redis_memory_used_bytes", level * 1e6, "feature-store", None, {}),  # no host
                (ts, "redis_memory_max_bytes", 1e9, "feature-store", None, {}),
                (ts, "node_cpu_utilization_ratio", level / 100, "feature-store", "fs-1", {}),
                (ts, "probe_success", 1.0, None, "prober", {"target": "http://gpu-1:8000/healthz"}),
                (ts, "probe_success", 1.0, None, "prober", {"target": "http://fs-1:6566/healthz"}),
                (ts, "DCGM_FI_DEV_GPU_UTIL", 5.0, "other", "gpu-9", gpu),
                (ts, "not_in_the_catalog", 1.0, "model-server", "gpu-1", {}),
            ]
            if w == w1:  # a series only in the baseline: neither reader keeps it
                rows.append((ts, "DCGM_FI_DEV_GPU_UTIL", 50.0, "model-server", "gpu-2", gpu))
    store.append("samples", _sample_rows(rows))
    catalog = load_catalog()
    metrics = [*catalog.metrics, *(c for c in catalog.capacity_metrics() if c not in catalog.metrics)]
    kw = dict(step_s=60, metrics=metrics, services=services, probe_targets=probe_targets, catalog=catalog)
    want = load_series_grid(store, [w0, w1], hosts_of=services, **kw)
    got = load_linked_grid(store, [w0, w1], **kw)
    assert len(want.meta) > 0
    pd.testing.assert_frame_equal(got.meta, want.meta)
    np.testing.assert_array_equal(got.values, want.values)


def test_error_matrix_counts_an_error_where_it_started() -> None:
    rows = []
    for w, (ms_err, fs_err) in enumerate([(30, 2), (1, 1), (1, 1), (1, 1)]):
        rows += [
            (w, 0, "", "api-gateway", 1000, ms_err + fs_err + 3),  # 3 of the gateway's own
            (w, 0, "api-gateway", "model-server", 1000, ms_err),
            (w, 0, "api-gateway", "feature-store", 1000, fs_err),
        ]
    frame = pd.DataFrame(rows, columns=["window", "ts", "client", "server", "count", "errors"])
    wide, kinds = error_matrix(frame, Target(**DEMO_TARGET))
    assert kinds == {"api-gateway": "service", "feature-store": "service", "model-server": "service"}
    assert wide.loc[(0, 0), ["__e2e", "api-gateway", "model-server", "feature-store"]].tolist() == [
        35,
        3,
        30,
        2,
    ]
    e2e = end_to_end_errors(wide, [1, 2, 3], 0)
    assert (e2e.baseline_bad_fraction, e2e.incident_bad_fraction) == (
        pytest.approx(0.005),
        pytest.approx(0.035),
    )
    dec = decompose_hops(
        wide,
        kinds,
        [1, 2, 3],
        0,
        e2e,
        Target(service="api-gateway", route="/recommend", kind="availability"),
        floor=0.0001,
    )
    assert (dec.hops[0].hop, dec.hops[0].share, dec.measure) == (
        "model-server",
        pytest.approx(29 / 30),
        "errors",
    )


@pytest.mark.parametrize(
    "values,step,expected",
    [
        ([1, 1, 9, 9, 1, 1], 1800, (2, 4)),  # 1 h of 30-minute buckets: the worst two
        ([1, 2, 3], 3600, (2, 3)),
        ([5.0, float("nan")], 60, (0, 2)),  # shorter than an hour: all of it
    ],
)
def test_bubbleup_reads_the_worst_hour_of_the_incident(
    values: list[float], step: int, expected: tuple[int, int]
) -> None:
    assert focus_offsets(np.array(values, dtype=float), step) == expected


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"metrics": {"x": {"dimension": "disk", "kind": "gauge"}}}, "metrics.x.dimension: 'disk'"),
        ({"metrics": {"x": {"dimension": "memory", "kind": "histogram"}}}, "metrics.x.kind: 'histogram'"),
        ({"metrics": {"x": {"dimension": "memory", "colour": 1}}}, "metrics.x.colour: unknown key"),
        ({"nope": 1}, "top-level 'metrics:'"),
    ],
)
def test_bad_catalog_entries_are_refused_with_the_key_named(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_catalog(doc, "cat.yaml")


def test_repeated_diagnosis_is_served_from_cache_until_the_store_changes(tmp_path: Path) -> None:
    effect = Effect(*_at(1, 10), hop_ms={"model-server": 250.0}, signals={"DCGM_FI_DEV_SM_CLOCK": 900.0})
    small = build_store(tmp_path / "s", [effect], days=2, rate=10)
    first = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end)
    hits = CACHE.hits
    again = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end)
    assert CACHE.hits == hits + 1
    assert [name for name, _ in again.timings_ms] == ["cache hit"]
    assert again == first and again.causes[0].hop == "model-server"
    # other arguments, or use_cache=False, are computed afresh
    other = diagnose(small, **{**DEMO_TARGET, "threshold_ms": 150.0}, start=effect.start, end=effect.end)
    assert other.timings_ms[0][0] == "hop_minutes query"
    fresh = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end, use_cache=False)
    assert fresh.timings_ms[0][0] == "hop_minutes query" and fresh == first
    # a write moves the DuckLake snapshot: the cached answer is not used again
    small.append("samples", _samples(np.random.default_rng(3), effect.start, effect.end, [], set()))
    after = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end)
    assert after.timings_ms[0][0] == "hop_minutes query"


def test_a_failed_diagnosis_leaves_no_read_transaction_open(tmp_path: Path) -> None:
    effect = Effect(*_at(1, 10), hop_ms={"model-server": 250.0}, signals={"DCGM_FI_DEV_SM_CLOCK": 900.0})
    small = build_store(tmp_path / "s", [effect], days=2, rate=10)
    with pytest.raises(NotFoundError):
        diagnose(small, **{**DEMO_TARGET, "route": "/nope"}, start=effect.start, end=effect.end)
    first = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end)
    # a write on the same thread (its own transaction) works, and the next diagnosis reads it
    small.append("samples", _samples(np.random.default_rng(3), effect.start, effect.end, [], set()))
    after = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end)
    assert after.timings_ms[0][0] == "hop_minutes query" and after.causes[0].hop == first.causes[0].hop


def _spans(start: datetime, durations: list[float], attrs: list[dict[str, str]]) -> pa.Table:
    n = len(durations)
    return pa.table(
        {
            "trace_id": [i.to_bytes(16, "big") for i in range(n)],
            "span_id": [i.to_bytes(8, "big") for i in range(n)],
            "service": ["model-server"] * n,
            "name": ["POST /predict"] * n,
            "kind": pa.array([2] * n, pa.int8()),
            "start_time": pa.array([start + timedelta(seconds=10 * i) for i in range(n)], pa.timestamp("us")),
            "duration_ms": durations,
            "status_code": pa.array([0] * n, pa.int8()),
            "http_status_code": pa.array([200] * n, pa.int32()),
            "host_name": ["gpu-1"] * n,
            "attributes": pa.array([list(a.items()) for a in attrs], pa.map_(pa.string(), pa.string())),
        }
    )


def test_bubbleup_counts_spans_buckets_numeric_attributes_and_skips_ids(tmp_path: Path) -> None:
    rng = random.Random(4)
    store = Store(tmp_path / "s")
    base_w, inc_w = (
        TimeRange(T0, T0 + timedelta(hours=1)),
        TimeRange(T0 + timedelta(hours=1), T0 + timedelta(hours=2)),
    )
    size = [rng.randint(1, 5000) for _ in range(300)]  # payload bytes: many values, all numbers
    base_attrs = [
        {"model.version": "v1", "payload.bytes": str(size[i]), "request.id": f"b{i}"} for i in range(200)
    ]
    # the incident: 40 slow spans (1 s, model v2), 60 fast ones (1 ms, v1)
    inc_attrs = [
        {
            "model.version": "v2" if i < 40 else "v1",
            "payload.bytes": str(size[200 + i]),
            "request.id": f"i{i}",
        }
        for i in range(100)
    ]
    store.append("spans", _spans(base_w.start, [float(d) for d in range(1, 201)], base_attrs))
    store.append("spans", _spans(inc_w.start, [1000.0] * 40 + [1.0] * 60, inc_attrs))
    counts, slow_total, base_total, cut = load_bubble_counts(
        store, "model-server", "service", inc_w, [base_w]
    )
    assert (slow_total, base_total) == (40, 200)
    assert cut == pytest.approx(190.05)  # the baseline's p95, interpolated as quantile_cont does
    got = {(r.attribute, r.value): (r.slow_n, r.base_n) for r in counts.itertuples()}
    assert "request.id" not in {a for a, _ in got}  # ids: too many values, not numbers
    assert got[("model.version", "v2")] == (40, 0) and got[("model.version", "v1")] == (0, 200)
    assert got[("host.name", "gpu-1")] == (40, 200)
    assert got[("http.response.status_code", "200")] == (40, 200)
    want: dict[str, list[int]] = {}
    for i, b in enumerate(size[:240]):
        label = f"<= {2 ** math.ceil(math.log2(max(b, 1)))}"
        want.setdefault(label, [0, 0])[0 if i >= 200 else 1] += 1
    assert {v: tuple(n) for (a, v), n in got.items() if a == "payload.bytes"} == {
        k: (s, b) for k, (s, b) in want.items()
    }
    attrs, _note = bubbleup(counts, slow_total, base_total)
    assert (attrs[0].attribute, attrs[0].value, attrs[0].slow_spans) == ("model.version", "v2", 40)


def test_a_signal_that_rose_from_zero_has_no_relative_change_and_reads_from_0() -> None:
    hop_ms = np.array([[100.0] * 10, [100.0] * 10, [300.0] * 10])
    zero_then_up = np.array([[0.0] * 10, [0.0] * 10, [0.16] * 10])  # e.g. the share of throttled samples
    base, inc, change, _, _, score = score_series(zero_then_up, hop_ms, [0, 1], 2, True, None)
    assert (base, inc, change) == (0.0, pytest.approx(0.16), None) and score > 0
    assert _change(change, inc) == "from 0" and _change(None, 0.0) == "0"
    _, _, change, _, _, _ = score_series(zero_then_up + 1.0, hop_ms, [0, 1], 2, True, None)
    assert change == pytest.approx(0.16) and _change(change, 1.16) == "+16%"
    assert _fmt(0.16, "bitmask") == "16% of samples"  # a bitmask signal is read as the share of bad samples


def test_a_sentence_names_a_signal_by_metric_and_place_not_by_its_whole_series_key() -> None:
    labels = {
        "service": "model-server",
        "host": "gpu-node-2",
        "UUID": "GPU-a93e",
        "gpu": "0",
        "modelName": "H100",
    }
    e = Evidence(
        signal='DCGM_FI_DEV_GPU_TEMP{host="gpu-node-2",UUID="GPU-a93e",gpu="0",modelName="H100"}',
        metric="DCGM_FI_DEV_GPU_TEMP", labels=labels, dimension="compute", baseline=60.0, incident=90.0,
        change=0.5, correlation=0.9, capacity=None, utilization=None, score=0.8, unit="°C",
    )  # fmt: skip
    assert _evidence_phrase(e) == "DCGM_FI_DEV_GPU_TEMP on gpu-node-2 GPU 0 went from 60 °C to 90 °C"
    nic = {"service": "api-gateway", "host": "gw-node-1", "device": "eth0"}
    assert replace(e, metric="node_network_transmit_bytes_total", labels=nic).short == (
        "node_network_transmit_bytes_total on gw-node-1 eth0"
    )


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({0: 50}, (0, 15)),  # one burning bucket at the start: at least 15 minutes are read
        ({10: 50, 20: 50}, (10, 25)),  # first to the end of the last burning bucket
        ({}, None),  # a slow burn: no 5-minute bucket over the budget, the whole breach is read
        ({m: 50 for m in range(60)}, None),  # burning throughout: nothing to trim
        ({30: 1}, None),  # one slow request in a bucket of 500: under the 1 % budget
    ],
    ids=["first-bucket", "middle", "slow-burn", "throughout", "at-the-budget"],
)
def test_a_breach_is_diagnosed_where_it_burned_budget(
    bad: dict[int, int], expected: tuple[int, int] | None
) -> None:
    t0 = datetime(2026, 11, 24, 17, 0)
    minutes = pd.DataFrame(
        {
            "minute": [t0 + timedelta(minutes=m) for m in range(60)],
            "total": 100,
            "good": [100 - bad.get(m, 0) for m in range(60)],
        }
    )
    got = burning_span(minutes, 0.99, t0, t0 + timedelta(minutes=60))
    want = (
        None
        if expected is None
        else (t0 + timedelta(minutes=expected[0]), t0 + timedelta(minutes=expected[1]))
    )
    assert got == want


def test_an_slo_without_a_route_is_diagnosed_over_every_route_of_its_service(store: Store) -> None:
    one = diagnose(store, start=BUSY.start, end=BUSY.end, **DEMO_TARGET)
    every = diagnose(store, start=BUSY.start, end=BUSY.end, service="api-gateway", threshold_ms=200.0)
    assert every.target.route is None and "of every route under api-gateway" in every.checked[0]
    # this store holds one route, so every route is that route: the same answer
    assert [(c.hop, c.dimension) for c in every.causes] == [(c.hop, c.dimension) for c in one.causes]


def test_an_slo_that_names_no_service_is_refused_not_diagnosed_as_the_demo(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "apiVersion: hopscope/v1\nkind: SLO\nmetadata: {name: x}\n"
        "spec: {objective: 0.99, window: 28d, sli: {kind: latency, thresholdMs: 300}}\n"
    )
    slos, refused = load_slos(tmp_path)
    assert not slos and "spec.sli.service: is required" in str(refused[0])
    # ...and an SLO built some other way without one is refused by the diagnosis, never defaulted
    sli = SimpleNamespace(service=None, hop=None, route=None, kind="latency", threshold_ms=300.0)
    slo = SimpleNamespace(name="x", sli=sli, service=None, objective=0.99, hop_budgets_ms=None)
    with pytest.raises(SpecError, match="names no service"):
        target_kwargs(slo)


# -- honesty: the residual, missing spans -----------------------------------------------------------


def test_a_breach_the_hops_explain_little_of_says_partly_explained_with_the_right_numbers(
    tmp_path: Path,
) -> None:
    effect = Effect(*_at(1, 10), hop_ms={HIDDEN: 300.0, "api-gateway->model-server": 15.0})
    small = build_store(tmp_path / "s", [effect], days=2, rate=10)
    d = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end)
    dec = d.decomposition
    assert d.verdict == VERDICT_CAUSE and dec is not None
    top = d.causes[0]
    assert top.hop == "api-gateway->model-server"
    # the hops hold ~15 of ~315 added ms: the explained share is theirs over the whole rise
    on_hops = sum(max(0.0, h.added_ms) for h in dec.hops)
    added = dec.end_to_end.added_mean_ms
    assert added == pytest.approx(315.0, rel=0.1) and on_hops == pytest.approx(15.0, rel=0.3)
    assert dec.partial and dec.explained == pytest.approx(on_hops / added)
    assert top.share > 0.8  # of the hops' added latency ...
    assert top.share_total == pytest.approx(top_added(dec, top.hop) / added)  # ... and of the whole
    assert top.share_total is not None and top.share_total < 0.1
    pct = f"{dec.explained:.0%}"
    assert d.verdict_line.startswith(
        f"cause found — partly explained: {pct} of the added latency is on hops hopscope can see"
    )
    assert f"{top.share_total:.0%} of the whole end-to-end rise) is on the wire" in top.summary
    doc = d.to_dict()
    jsonschema.validate(doc, SCHEMA)
    ex = doc["explained"]
    assert ex["partial"] and ex["fraction"] == pytest.approx(dec.explained, abs=1e-4)
    assert ex["residual"] == pytest.approx(added - on_hops, abs=1e-3)
    assert ex["statement"].startswith("partly explained") and "residual" in ex["statement"]
    assert doc["causes"][0]["share_of_total"] == pytest.approx(top.share_total, abs=1e-4)
    assert d.summary_dict()["explained"] == ex  # incidents --json names the residual too
    text = render(d)
    assert f"verdict: cause found — partly explained: {pct}" in text
    assert "residual (on no hop): +" in text


def top_added(dec: object, hop: str) -> float:
    return next(h.added_ms for h in dec.hops if h.hop == hop)  # type: ignore[attr-defined]


def test_a_fully_explained_breach_is_not_called_partly_explained(store: Store) -> None:
    effect = CASES[1][1]
    d = diagnose(store, **DEMO_TARGET, start=effect.start, end=effect.end, with_bubbleup=False)
    dec = d.decomposition
    assert dec is not None and not dec.partial and dec.explained is not None and dec.explained > 0.9
    assert d.verdict_line == VERDICT_CAUSE
    assert "partly" not in d.causes[0].summary
    assert d.to_dict()["explained"]["statement"].startswith(f"{dec.explained:.0%} of the added latency")


def test_missing_spans_are_reported_as_a_data_gap_and_left_out_not_averaged(tmp_path: Path) -> None:
    effect = Effect(*_at(1, 10), hop_ms={"model-server": 200.0})
    lost = (effect.start, effect.start + timedelta(minutes=30))

    def lose_model_server_spans(edges: pd.DataFrame) -> pd.DataFrame:
        # model-server stopped exporting: its edge is client-only (no server, gap or self time)
        m = (edges["server"] == "model-server") & edges["minute"].between(lost[0], lost[1], inclusive="left")
        edges = edges.copy()
        edges.loc[m, ["self_ms_sum", "gap_ms_sum", "server_ms_sum"]] = 0.0
        return edges

    small = build_store(tmp_path / "s", [effect], days=2, rate=10, edit_edges=lose_model_server_spans)
    d = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end, with_bubbleup=False)
    assert [(g.service, g.signal, g.minutes, g.of_minutes, g.left_out) for g in d.data_gaps] == [
        ("model-server", "self time", 30, 60, True)
    ]
    assert d.data_gaps[0].incident < 0.1 * d.data_gaps[0].baseline
    assert any(n.startswith("data gap: model-server's spans are missing in 30 of 60") for n in d.notes)
    # the 30 minutes with spans give the real slowdown: +200 ms, not +100 ms averaged with zeros
    top = d.causes[0]
    assert top.hop == "model-server"
    assert top_added(d.decomposition, "model-server") == pytest.approx(200.0, rel=0.15)
    assert d.decomposition is not None and not d.decomposition.partial
    doc = d.to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert doc["data_gaps"][0]["service"] == "model-server" and doc["data_gaps"][0]["left_out"]


def test_spans_missing_for_the_whole_incident_leave_the_service_unjudged(tmp_path: Path) -> None:
    effect = Effect(*_at(1, 10), hop_ms={HIDDEN: 250.0})

    def drop_feature_store(edges: pd.DataFrame) -> pd.DataFrame:
        m = (edges["server"] == "feature-store") & edges["minute"].between(effect.start, effect.end, "left")
        return edges[~m]

    small = build_store(tmp_path / "s", [effect], days=2, rate=10, edit_edges=drop_feature_store)
    d = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end, with_bubbleup=False)
    gap = d.data_gaps[0]
    assert (gap.service, gap.signal, gap.minutes, gap.left_out) == ("feature-store", "calls", 60, False)
    assert all(c.hop not in ("feature-store", "api-gateway->feature-store") for c in d.causes)
    assert any("its hops are not judged" in n for n in d.notes)


# -- baseline: before the onset, degraded but better ------------------------------------------------


def test_the_baseline_ends_before_the_onset_of_a_fault_that_began_before_the_page(tmp_path: Path) -> None:
    fault = Effect(*_at(1, 10), hop_ms={"model-server": 150.0})
    small = build_store(tmp_path / "s", [fault], days=2, rate=10)
    # paged 10 minutes into the fault; no earlier days to compare with (a fresh deployment)
    start = fault.start + timedelta(minutes=10)
    d = diagnose(
        small, **DEMO_TARGET, start=start, end=start + timedelta(minutes=30), baseline_days=0, use_cache=False
    )
    prev = d.baseline.windows[0]
    assert (prev.kind, prev.used, prev.end) == ("previous", True, fault.start)
    assert prev.start == fault.start - timedelta(minutes=30)
    assert "the previous window ends at 10:00, where the SLI's rise began (10 min before" in d.baseline.note
    assert d.verdict == VERDICT_CAUSE
    assert (d.causes[0].hop, top_added(d.decomposition, "model-server")) == (
        "model-server",
        pytest.approx(150.0, rel=0.15),
    )


def test_a_baseline_never_reaches_into_the_breach_before_the_diagnosed_minutes(tmp_path: Path) -> None:
    fault = Effect(*_at(1, 10), hop_ms={"model-server": 150.0})
    small = build_store(tmp_path / "s", [fault], days=2, rate=10)
    start = fault.start + timedelta(minutes=20)
    breach_start = fault.start - timedelta(minutes=5)  # the breach opened earlier than the diagnosed part
    d = diagnose(
        small, **DEMO_TARGET, start=start, end=start + timedelta(minutes=30), baseline_days=0,
        baseline_end=breach_start, use_cache=False,
    )  # fmt: skip
    assert d.baseline.windows[0].end <= breach_start
    assert "where the breach began" in d.baseline.note


def test_a_degraded_baseline_far_better_than_the_incident_is_used_with_a_note(tmp_path: Path) -> None:
    before = Effect(*_at(1, 8), hop_ms={"model-server": 70.0})  # slow all along: over the objective
    fault = Effect(*_at(1, 9), hop_ms={"model-server": 70.0, "feature-store": 250.0})
    small = build_store(tmp_path / "s", [before, fault], days=2, rate=10)
    d = diagnose(small, **DEMO_TARGET, start=fault.start, end=fault.end, baseline_days=0, use_cache=False)
    prev = d.baseline.windows[0]
    assert prev.used and d.baseline.sufficient
    assert d.baseline.note.startswith("baseline itself degraded: ")
    base_bad, inc_bad = (d.decomposition.end_to_end.baseline_bad_fraction,
                         d.decomposition.end_to_end.incident_bad_fraction)  # fmt: skip
    assert 0.01 < base_bad < inc_bad / 2
    assert f"{base_bad:.2%} requests over 200 ms vs {inc_bad:.2%} in the incident" in d.baseline.note
    assert (d.causes[0].hop, d.verdict) == ("feature-store", VERDICT_CAUSE)


# -- signals: host CPU and PSI, queueing disciplines; saturation above demand -----------------------


def test_a_cpu_starved_service_without_a_gpu_is_judged_on_compute_from_cpu_seconds_and_psi(
    tmp_path: Path,
) -> None:
    cpu = [
        ("node_cpu_seconds_total", "model-server", "cpu-1", {"cpu": "0", "mode": "user"}, 0.4, 0.04),
        ("node_cpu_seconds_total", "model-server", "cpu-1", {"cpu": "0", "mode": "idle"}, 0.6, 0.04),
        ("node_pressure_cpu_waiting_seconds_total", "model-server", "cpu-1", {}, 0.01, 0.003),
    ]
    effect = Effect(
        *_at(1, 10),
        hop_ms={"model-server": 200.0},
        signals={"node_cpu_seconds_total": 0.98, "node_pressure_cpu_waiting_seconds_total": 0.6},
    )
    small = build_store(tmp_path / "s", [effect], days=2, rate=10, drop={"DCGM_"}, extra_signals=cpu)
    d = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end, with_bubbleup=False)
    top = d.causes[0]
    assert (top.hop, top.dimension) == ("model-server", "compute")
    by_metric = {e.metric: e for e in top.evidence}
    assert set(by_metric) == {"node_cpu_seconds_total", "node_pressure_cpu_waiting_seconds_total"}
    assert by_metric["node_cpu_seconds_total"].labels["mode"] == "user"  # idle is not busy time
    assert by_metric["node_cpu_seconds_total"].utilization == pytest.approx(0.98, abs=0.03)
    assert by_metric["node_pressure_cpu_waiting_seconds_total"].role == "saturation"
    assert "at its limit" in top.summary
    jsonschema.validate(d.to_dict(), SCHEMA)


def test_a_qdisc_backlog_and_drops_are_named_as_the_bandwidth_limit_above_packet_rate_demand(
    tmp_path: Path,
) -> None:
    link = {"device": "veth-gw", "kind": "tbf"}
    qdisc = [
        ("node_qdisc_backlog", "api-gateway", "gw-1", link, 0.0, 0.0),
        ("node_qdisc_drops_total", "api-gateway", "gw-1", link, 0.0, 0.0),
        ("node_network_transmit_packets_total", "api-gateway", "gw-1", {"device": "veth-gw"}, 1000.0, 100.0),
    ]
    effect = Effect(
        *_at(1, 10),
        hop_ms={"api-gateway->model-server": 200.0},
        signals={
            "node_qdisc_backlog": 150_000.0,
            "node_qdisc_drops_total": 40.0,
            "node_network_transmit_packets_total": 6000.0,
        },
    )
    small = build_store(tmp_path / "s", [effect], days=2, rate=10, extra_signals=qdisc)
    d = diagnose(small, **DEMO_TARGET, start=effect.start, end=effect.end, with_bubbleup=False)
    top = d.causes[0]
    assert (top.hop, top.dimension) == ("api-gateway->model-server", "bandwidth")
    ranked = [e.metric for e in top.evidence]
    assert ranked[:2] == ["node_qdisc_backlog", "node_qdisc_drops_total"] or ranked[:2] == [
        "node_qdisc_drops_total",
        "node_qdisc_backlog",
    ]
    packets = next(e for e in top.evidence if e.metric == "node_network_transmit_packets_total")
    assert packets.role == "demand" and packets.score < top.evidence[0].score
    assert "node_qdisc_" in top.summary and "at its limit" in top.summary
    assert d.to_dict()["causes"][0]["evidence"][0]["role"] == "saturation"


# -- a user's catalog: signals and a label map from hopscope.toml, not the package ------------------

USER_TOML = """
[[diagnosis.signals]]                 # a signal the packaged catalog does not know
name = "inference_queue_depth"
dimension = "compute"
kind = "gauge"
unit = "requests"
role = "saturation"

[[diagnosis.map]]                     # this container is the model server, on whatever host it runs
match = { container = "triton" }
service = "model-server"

[[diagnosis.map]]                     # the router's ports: each is the wire of one edge
match = { host = "router-1", device = "p3" }
edge = "api-gateway->model-server"

[[diagnosis.map]]
match = { host = "router-1", device = "p2" }
edge = "api-gateway->feature-store"
"""


def test_a_signal_and_label_map_declared_in_hopscope_toml_turn_an_unjudged_hop_into_a_compute_cause(
    tmp_path: Path,
) -> None:
    # a queue on a host no service's series name, known to the model server only by its container
    queue = [("inference_queue_depth", None, "box-9", {"container": "triton"}, 2.0, 0.5)]
    effect = Effect(*_at(1, 10), hop_ms={"model-server": 200.0}, signals={"inference_queue_depth": 40.0})
    small = build_store(tmp_path / "s", [effect], days=2, rate=10, drop={"DCGM_"}, extra_signals=queue)
    args = dict(**DEMO_TARGET, start=effect.start, end=effect.end, with_bubbleup=False, use_cache=False)

    packaged = diagnose(small, **args).causes[0]
    assert (packaged.hop, packaged.dimension) == ("model-server", "unknown")
    assert "inference_queue_depth" not in load_catalog()  # the package is not touched

    (tmp_path / "hopscope.toml").write_text(USER_TOML)
    user = diagnose(small, **args, catalog=configured_catalog(tmp_path / "hopscope.toml")).causes[0]
    assert (user.hop, user.dimension) == ("model-server", "compute")
    assert user.evidence[0].metric == "inference_queue_depth"
    assert user.evidence[0].role == "saturation" and user.evidence[0].labels["container"] == "triton"


def test_a_router_port_mapped_to_an_edge_is_that_edges_evidence_and_no_other_hops(tmp_path: Path) -> None:
    ports = [
        ("node_qdisc_backlog", None, "router-1", {"device": "p3", "kind": "tbf"}, 0.0, 0.0),
        ("node_qdisc_backlog", None, "router-1", {"device": "p2", "kind": "tbf"}, 0.0, 0.0),
    ]
    effect = Effect(
        *_at(1, 10), hop_ms={"api-gateway->model-server": 200.0}, signals={"node_qdisc_backlog": 150_000.0}
    )
    small = build_store(tmp_path / "s", [effect], days=2, rate=10, extra_signals=ports)
    args = dict(**DEMO_TARGET, start=effect.start, end=effect.end, with_bubbleup=False, use_cache=False)
    assert "node_qdisc_" not in json.dumps(diagnose(small, **args).to_dict()["causes"])  # unlinked

    (tmp_path / "hopscope.toml").write_text(USER_TOML)
    d = diagnose(small, **args, catalog=configured_catalog(tmp_path / "hopscope.toml"))
    top = d.causes[0]
    assert (top.hop, top.dimension) == ("api-gateway->model-server", "bandwidth")
    qdisc = [e for e in top.evidence if e.metric == "node_qdisc_backlog"]
    # both ports' backlogs rose in this made-up store; only p3 is this edge's wire
    assert [e.labels["device"] for e in qdisc] == ["p3"] and top.evidence[0] is qdisc[0]


@pytest.mark.parametrize(
    "toml,message",
    [
        ('[[diagnosis.signals]]\nname = "q"\ndimension = "disk"', r"diagnosis.signals\[0\].dimension: 'disk'"),
        ('[[diagnosis.signals]]\ndimension = "compute"', r"diagnosis.signals\[0\].name: None"),
        ('[[diagnosis.signals]]\nname = "q"\ndimension = "compute"\nrole = "cause"', r"signals\[0\].role: 'cause'"),
        ('[[diagnosis.signals]]\nname = "q"\ndimension = "compute"\ncolour = 1', r"signals\[0\].colour: unknown key"),
        ('[[diagnosis.signals]]\nname = "q"\ndimension = "compute"\n[[diagnosis.signals]]\nname = "q"\n'
         'dimension = "memory"', r"signals\[1\].name: 'q' is declared twice"),
        ('[[diagnosis.map]]\nservice = "m"', r"diagnosis.map\[0\].match: None is not a table"),
        ('[[diagnosis.map]]\nmatch = { cpu = 3 }', r"map\[0\]: name one of service"),
        ('[[diagnosis.map]]\nmatch = { cpu = 3 }\nservice = "a"\nedge = "a->b"', r"map\[0\]: name one of .* not both"),
        ('[[diagnosis.map]]\nmatch = { cpu = 3 }\nedge = "a-b"', r"map\[0\].edge: 'a-b' is not a network hop"),
        ('[[diagnosis.map]]\nmatch = { cpu = 3.5 }\nservice = "a"', r"map\[0\].match.cpu: 3.5 is not a label value"),
        ('[[diagnosis.map]]\nmatch = { cpu = [] }\nservice = "a"', r"map\[0\].match.cpu: \[\] is not"),
        ('[[diagnosis.map]]\nmatch = { cpu = "1" }\nservice = "a"\nwhere = 1', r"map\[0\].where: unknown key"),
        ("[diagnosis]\nsignal = []", r"diagnosis.signal: unknown key"),
    ],
)  # fmt: skip
def test_bad_user_catalog_entries_are_refused_with_the_entry_and_key_named(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "hopscope.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        configured_catalog(path)


def test_a_user_entry_replaces_the_packaged_one_of_the_same_name(tmp_path: Path) -> None:
    path = tmp_path / "hopscope.toml"
    path.write_text('[[diagnosis.signals]]\nname = "process_cpu_seconds_total"\ndimension = "compute"\n'
                    'kind = "counter"\ncapacity_value = 2\nrole = "saturation"\n'
                    '[[diagnosis.map]]\nmatch = { cpu = [2, "3"], host = "gpu-1" }\nservice = "model-server"')  # fmt: skip
    cat = configured_catalog(path)
    assert cat["process_cpu_seconds_total"].capacity_value == 2.0
    assert cat["process_cpu_seconds_total"].role == "saturation"
    assert load_catalog()["process_cpu_seconds_total"].capacity_value is None
    assert len(cat) == len(load_catalog()) and configured_catalog(path) is cat  # the cache knows it
    assert cat.link_of("", "gpu-1", {"cpu": "2"}) is not None
    assert cat.link_of("", "gpu-2", {"cpu": "2"}) is None and cat.link_of("", "gpu-1", {"cpu": "4"}) is None
