"""Render envoy/envoy.yaml.in for a given set of service addresses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from cairn.runtime.settings import Settings

ENVOY_DIR = Path(__file__).resolve().parents[3] / "envoy"
TEMPLATE = ENVOY_DIR / "envoy.yaml.in"
LUA_SHAPER = ENVOY_DIR / "rest_shaper.lua"
# Cairn's OpenAPI document (every REST path Cairn serves), and where Envoy serves it.
OPENAPI_DOCUMENT = ENVOY_DIR / "openapi.yaml"
DOCUMENT_PATH = "/openapi.yaml"
MAX_DOCUMENT_BYTES = 1 << 20

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
                  max_stream_duration: {max_stream_duration: STREAM_TIMEOUT}
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


# Filters that must not touch the routes Envoy answers itself: no credentials are needed to read
# the document or to learn a method is not allowed (Golem's servers route before they
# authenticate), and the transcoder would answer 404 for a method it has no rule for.
_OWN_ANSWER_FILTERS = """\
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.\
ExtAuthzPerRoute
                    disabled: true
                  envoy.filters.http.grpc_json_transcoder:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
"""

_DOCUMENT_ROUTE = """\
              - match:
                  path: "{path}"
                  headers: [{{name: ":method", string_match: {{exact: GET}}}}]
                direct_response: {{status: 200, body: {{filename: {filename}}}}}
""" + _OWN_ANSWER_FILTERS

_METHOD_NOT_ALLOWED_ROUTE = """\
              - match:
                  safe_regex: {{regex: "{regex}"}}
                  headers:
                  - name: ":method"
                    string_match: {{safe_regex: {{regex: "^({methods})$"}}}}
                    invert_match: true
                direct_response: {{status: 405, body: {{inline_string: "Method Not Allowed"}}}}
                response_headers_to_add:
                - header: {{key: allow, value: "{allow}"}}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
""" + _OWN_ANSWER_FILTERS


def literal_regex(text: str) -> str:
    """`text` as a regex that also reads the same inside a double-quoted YAML string."""
    return "".join(c if c.isalnum() or c in "-_/" else f"[{c}]" for c in text)


@dataclass(frozen=True)
class RestRule:
    """One REST binding of a gRPC method: an HTTP method and a path template."""

    method: str
    template: str

    def segments(self) -> list[str | None]:
        """The template's path segments; None for a `{variable}` segment."""
        return [
            None if part.startswith("{") else part for part in self.template.strip("/").split("/")
        ]

    def regex(self) -> str:
        parts = ["[^/]+" if s is None else literal_regex(s) for s in self.segments()]
        return "^/" + "/".join(parts) + "$"

    def overlaps(self, other: RestRule) -> bool:
        """Whether some request path matches both templates."""
        mine, theirs = self.segments(), other.segments()
        return len(mine) == len(theirs) and all(
            a is None or b is None or a == b for a, b in zip(mine, theirs, strict=True)
        )


_HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def _bindings(rule: http_pb2.HttpRule) -> list[http_pb2.HttpRule]:
    return [rule, *rule.additional_bindings]


def rest_rules(descriptor_path: Path) -> list[RestRule]:
    """Every (method, path template) the transcoder serves, read from the descriptor set."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    rules = []
    for file in files.file:
        if not file.package.startswith("cairn."):
            continue
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                for binding in _bindings(method.options.Extensions[annotations_pb2.http]):
                    pattern = binding.WhichOneof("pattern")
                    if pattern in _HTTP_METHODS:
                        rules.append(RestRule(pattern.upper(), getattr(binding, pattern)))
    return rules


def method_not_allowed_routes(rules: list[RestRule]) -> str:
    """Routes answering 405 (with `Allow`) when a known path is called with another method.

    A path can match several templates (`/v1/projects/default`, `/v1/projects/{project_id}`),
    so each template allows the methods of every template it overlaps.
    """
    routes = []
    for template in sorted({r.template for r in rules}):
        probe = RestRule("", template)
        allowed = sorted({r.method for r in rules if probe.overlaps(r)})
        routes.append(
            _METHOD_NOT_ALLOWED_ROUTE.format(
                regex=probe.regex(), methods="|".join(allowed), allow=", ".join(allowed)
            )
        )
    return "".join(routes)

# Envoy's own spans (the request, ext_authz, the upstream call) go to an OTLP/gRPC collector;
# W3C `traceparent` carries the trace on to the services (docs/observability.md).
_TRACING = """\
          tracing:
            random_sampling: {{value: {percent}}}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: cairn-envoy
                grpc_service:
                  envoy_grpc: {{cluster_name: otlp_collector}}
                  timeout: 2s
"""


# Methods that move a whole file: uploads and downloads get the transfer timeout, not the API's.
TRANSFER_METHODS = {
    "cairn.component.v1.ComponentService": (
        "CreateComponent", "UploadComponent", "UpdateComponent", "DownloadComponent",
    ),
    "cairn.component.v1.TemplateService": ("CreateTemplate", "UploadTemplate", "DownloadTemplate"),
    "cairn.ledger.v1.LedgerService": ("UploadDarFile", "GetPackage"),
}

_TRANSFER_ROUTE = """\
              - match: {{safe_regex: {{regex: "{regex}"}}}}
                route:
                  cluster: {cluster}
                  timeout: 0s
                  max_stream_duration: {{max_stream_duration: {seconds}s}}
"""


@dataclass(frozen=True)
class EdgeLimits:
    """How long a client may take, and how many connections Envoy holds (docs/hardening.md)."""

    headers_timeout_seconds: int = 10
    idle_timeout_seconds: int = 60
    request_timeout_seconds: int = 60
    transfer_timeout_seconds: int = 900
    stream_timeout_seconds: int = 86_400
    max_connections: int = 4096

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            headers_timeout_seconds=settings.envoy_headers_timeout_seconds,
            idle_timeout_seconds=settings.envoy_idle_timeout_seconds,
            request_timeout_seconds=settings.envoy_request_timeout_seconds,
            transfer_timeout_seconds=settings.envoy_transfer_timeout_seconds,
            stream_timeout_seconds=settings.envoy_stream_timeout_seconds,
            max_connections=settings.envoy_max_connections,
        )


def transfer_routes(
    descriptor_path: Path, seconds: int,
    methods: Mapping[str, tuple[str, ...]] = TRANSFER_METHODS,
) -> str:
    """One route per service for its transfer methods, checked against the descriptor set."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    known = {
        f"{file.package}.{service.name}": {method.name for method in service.method}
        for file in files.file
        for service in file.service
    }
    routes = []
    for service, names in methods.items():
        missing = set(names) - known.get(service, set())
        if missing:
            raise ValueError(f"{service} has no method(s) {', '.join(sorted(missing))}")
        regex = f"^/{literal_regex(service)}/({'|'.join(names)})$"
        cluster = service.split(".")[1]
        routes.append(_TRANSFER_ROUTE.format(regex=regex, cluster=cluster, seconds=seconds))
    return "".join(routes)


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
    # Prometheus text (the admin's /stats/prometheus) at http://<bind_host>:<stats_port>/metrics,
    # and the admin's readiness at /ready
    stats_port: int = 9902
    # The admin interface's address: loopback, since it can drain and stop Envoy.
    admin_host: str = "127.0.0.1"
    # (host, port) of an OTLP/gRPC collector; None: no tracing in Envoy
    otlp_collector: tuple[str, int] | None = None
    trace_sample_ratio: float = 1.0
    limits: EdgeLimits = EdgeLimits()


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
    limits = layout.limits
    stream_routes = ""
    if layout.ledger_ws is not None:
        clusters += _cluster(_WS_CLUSTER, "ledger_ws", *layout.ledger_ws)
        stream_routes = _STREAM_ROUTE.replace(
            "STREAM_TIMEOUT", f"{limits.stream_timeout_seconds}s"
        )
    tracing = ""
    if layout.otlp_collector is not None:
        clusters += _cluster(_CLUSTER, "otlp_collector", *layout.otlp_collector)
        tracing = _TRACING.format(percent=round(layout.trace_sample_ratio * 100, 4))
    # The stats listener reaches the admin interface; a wildcard bind is reached on loopback.
    admin_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(layout.admin_host, layout.admin_host)
    return Template(TEMPLATE.read_text()).substitute(
        BIND_HOST=layout.bind_host,
        ADMIN_HOST=layout.admin_host,
        HTTP_PORT=layout.http_port,
        ADMIN_PORT=layout.admin_port,
        ADMIN_CONNECT_HOST=admin_host,
        STATS_PORT=layout.stats_port,
        TRACING=tracing,
        LUA_PATH=LUA_SHAPER,
        DESCRIPTOR_PATH=layout.descriptor_path,
        TRANSCODED_SERVICES=", ".join(transcoded_services(layout.descriptor_path)),
        MAX_BODY_BYTES=layout.max_body_bytes,
        CLUSTERS=clusters.rstrip("\n"),
        STREAM_ROUTES=stream_routes,
        DOCUMENT_PATH_REGEX=literal_regex(DOCUMENT_PATH),
        MAX_DOCUMENT_BYTES=MAX_DOCUMENT_BYTES,
        DOCUMENT_ROUTES=_DOCUMENT_ROUTE.format(path=DOCUMENT_PATH, filename=OPENAPI_DOCUMENT),
        METHOD_ROUTES=method_not_allowed_routes(rest_rules(layout.descriptor_path)),
        TRANSFER_ROUTES=transfer_routes(layout.descriptor_path, limits.transfer_timeout_seconds),
        HEADERS_TIMEOUT=limits.headers_timeout_seconds,
        IDLE_TIMEOUT=limits.idle_timeout_seconds,
        REQUEST_TIMEOUT=limits.request_timeout_seconds,
        STREAM_TIMEOUT=limits.stream_timeout_seconds,
        MAX_CONNECTIONS=limits.max_connections,
    )
