"""Render envoy/envoy.yaml.in for a given set of service addresses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

ENVOY_DIR = Path(__file__).resolve().parents[3] / "envoy"
TEMPLATE = ENVOY_DIR / "envoy.yaml.in"
LUA_SHAPER = ENVOY_DIR / "rest_shaper.lua"
# Every gRPC service that has REST paths; must match the descriptor set or Envoy refuses to start.
TRANSCODED_SERVICES = ("cairn.project.v1.ProjectService",)

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


@dataclass(frozen=True)
class EnvoyLayout:
    bind_host: str
    http_port: int
    admin_port: int
    descriptor_path: Path
    # service name ("project", ...) -> (host, port) of its gRPC server
    upstreams: dict[str, tuple[str, int]]
    max_body_bytes: int = 64 << 20


def render(layout: EnvoyLayout) -> str:
    clusters = "".join(
        _CLUSTER.format(
            name=name,
            kind="STATIC" if host[0].isdigit() else "STRICT_DNS",
            host=host,
            port=port,
        )
        for name, (host, port) in sorted(layout.upstreams.items())
    )
    return Template(TEMPLATE.read_text()).substitute(
        BIND_HOST=layout.bind_host,
        HTTP_PORT=layout.http_port,
        ADMIN_PORT=layout.admin_port,
        LUA_PATH=LUA_SHAPER,
        DESCRIPTOR_PATH=layout.descriptor_path,
        TRANSCODED_SERVICES=", ".join(TRANSCODED_SERVICES),
        MAX_BODY_BYTES=layout.max_body_bytes,
        CLUSTERS=clusters.rstrip("\n"),
    )
