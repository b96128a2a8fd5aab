"""Render envoy/envoy.yaml.in for a given set of service addresses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ENVOY_DIR = Path(__file__).resolve().parents[3] / "envoy"
TEMPLATE = ENVOY_DIR / "envoy.yaml.in"
LUA_SHAPER = ENVOY_DIR / "rest_shaper.lua"

_CLUSTER = """\
  - name: {name}
    type: {kind}
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}
"""


# WebSocket upstreams speak plain HTTP/1.1 (Envoy's default upstream protocol).
_WS_CLUSTER = """\
  - name: {name}
    type: {kind}
    connect_timeout: 2s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}
"""


# Plain HTTP/1.1 upgrades to the ledger's stream port. The transcoder would 404 the unknown path
# and the Lua shaper would wait for the end of the upgraded stream, so both are off there;
# ext_authz is off because the token travels in a subprotocol, which the stream server verifies.
_STREAM_ROUTE = """\
              - match: {prefix: "/v1/stream/"}
                route:
                  cluster: ledger_ws
                  timeout: 0s
                  upgrade_configs: [{upgrade_type: websocket}]
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.\
ExtAuthzPerRoute
                    disabled: true
                  envoy.filters.http.lua:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
                  envoy.filters.http.grpc_json_transcoder:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
"""


@dataclass(frozen=True)
class EnvoyLayout:
    bind_host: str
    http_port: int
    admin_port: int
    descriptor_path: Path
    # service name ("project", ...) -> (host, port) of its gRPC server
    upstreams: dict[str, tuple[str, int]]
    max_body_bytes: int = 64 << 20
    # (host, port) of the ledger's WebSocket streams; None: no /v1/stream/ route at all
    ledger_ws: tuple[str, int] | None = None


def transcoded_services(descriptor_path: Path) -> list[str]:
    """Every Cairn service with at least one google.api.http rule, read from the descriptor set.

    Envoy refuses to start on a service name the descriptor lacks, so the list is derived, not kept.
    """
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    names = []
    for file in files.file:
        if not file.package.startswith("cairn."):
            continue
        for service in file.service:
            if any(m.options.HasExtension(annotations_pb2.http) for m in service.method):
                names.append(f"{file.package}.{service.name}")
    return sorted(names)


def _cluster(template: str, name: str, host: str, port: int) -> str:
    kind = "STATIC" if host[0].isdigit() else "STRICT_DNS"
    return template.format(name=name, kind=kind, host=host, port=port)


def render(layout: EnvoyLayout) -> str:
    clusters = "".join(
        _cluster(_CLUSTER, name, host, port)
        for name, (host, port) in sorted(layout.upstreams.items())
    )
    stream_routes = ""
    if layout.ledger_ws is not None:
        clusters += _cluster(_WS_CLUSTER, "ledger_ws", *layout.ledger_ws)
        stream_routes = _STREAM_ROUTE
    return Template(TEMPLATE.read_text()).substitute(
        BIND_HOST=layout.bind_host,
        HTTP_PORT=layout.http_port,
        ADMIN_PORT=layout.admin_port,
        LUA_PATH=LUA_SHAPER,
        DESCRIPTOR_PATH=layout.descriptor_path,
        TRANSCODED_SERVICES=", ".join(transcoded_services(layout.descriptor_path)),
        MAX_BODY_BYTES=layout.max_body_bytes,
        CLUSTERS=clusters.rstrip("\n"),
        STREAM_ROUTES=stream_routes,
    )
