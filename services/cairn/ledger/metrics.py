"""The ledger's Prometheus metrics (docs/observability.md); recorded where each thing happens."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

COMMITS = Counter("cairn_ledger_commits", "Transactions committed by this process.")
CONFLICTS = Counter(
    "cairn_ledger_commit_conflicts",
    "Commits refused because their inputs changed first (contention or a replayed command), "
    "by the store's reason.",
    ["reason"],
)
END_OFFSET = Gauge(
    "cairn_ledger_end_offset",
    "The ledger end: the offset of the last transaction this process committed or was fed.",
)
STREAM_SUBSCRIBERS = Gauge(
    "cairn_ledger_stream_subscribers", "Open WebSocket streams fed by this process's commit feed."
)
SLOW_STREAMS_DROPPED = Counter(
    "cairn_ledger_slow_streams_dropped",
    "Streams ended because their client read more slowly than the ledger committed.",
)
