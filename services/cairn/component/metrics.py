"""The component service's Prometheus metrics (docs/observability.md)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

UPLOADS = Counter("cairn_component_uploads", "Component binaries stored, by operation.",
                  ["operation"])
UPLOAD_BYTES = Counter("cairn_component_upload_bytes", "Bytes of component binaries stored.")
METADATA_EXTRACTION_SECONDS = Histogram(
    "cairn_component_metadata_extraction_seconds",
    "Time to read an uploaded binary and extract its metadata (a worker thread).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
