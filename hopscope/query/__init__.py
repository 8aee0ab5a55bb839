"""The read layer: every SQL statement the dashboard, the CLI and the report read with, by what it reads.

    windows     the time range to draw (Window), the data's end, relative ranges
    spans       hop_minutes and spans: latency, traffic, hops, traces, exemplars
    samples     samples: metric series, evidence series, freshness of the sources
    slos        SLOs under a rules path: status, breaches, incidents with their diagnosis, timelines
    store_info  the store itself: tables, retention, state, collector runs, size

Each function takes a Store and returns a small pandas DataFrame with documented columns (aggregated
inside DuckDB to at most ``model.MAX_POINTS`` buckets per series, so a 90-day range costs the browser
no more than a 1-hour one) or a typed record. Callers hold no SQL and no math.
"""
