"""What the install must get right beyond version numbers (see the Makefile's OTEL_PROTO_LAST)."""

from __future__ import annotations

OVERWRITTEN = ("xds-protos' old copy of opentelemetry/proto/* overwrote opentelemetry-proto's: "
               "`make setup` (and the image) install opentelemetry-proto again, last")


def test_opentelemetry_protos_are_opentelemetrys_own_so_the_otlp_exporter_imports() -> None:
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope"), OVERWRITTEN
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    assert OTLPSpanExporter
