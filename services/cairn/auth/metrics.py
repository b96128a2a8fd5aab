"""The auth service's Prometheus metrics (docs/observability.md)."""

from __future__ import annotations

from prometheus_client import Counter

DENIALS = Counter(
    "cairn_auth_denials",
    "Requests Envoy's ext_authz refused, by reason (e.g. UNAUTHENTICATED, TOKEN_ERROR).",
    ["reason"],
)
