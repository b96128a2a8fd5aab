"""The rendered Envoy config is accepted by the real Envoy binary (`--mode validate`)."""

import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from cairn.runtime.settings import Settings
from cairn.stack.envoy_config import (
    TRANSFER_METHODS,
    EdgeLimits,
    EnvoyLayout,
    RestRule,
    method_not_allowed_routes,
    render,
    rest_rules,
    transcoded_services,
    transfer_routes,
)
from cairn.stack.launcher import DESCRIPTOR, SERVICES, envoy_binary


def layout(**upstreams: tuple[str, int]) -> EnvoyLayout:
    return EnvoyLayout(
        bind_host="127.0.0.1",
        http_port=18080,
        admin_port=19901,
        descriptor_path=DESCRIPTOR,
        upstreams=upstreams or {n: ("127.0.0.1", 1) for n in SERVICES},
    )


def test_rendered_config_is_valid_yaml_with_every_cluster() -> None:
    config = yaml.safe_load(render(layout()))
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    # envoy_admin: the stats listener's way to the admin interface's /stats/prometheus.
    assert clusters == {"project", "auth", "component", "ledger", "envoy_admin"}


def test_dns_names_use_strict_dns_clusters() -> None:
    config = yaml.safe_load(render(layout(project=("project.cairn.svc", 20051))))
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert clusters["project"]["type"] == "STRICT_DNS"


def test_stats_listener_serves_only_prometheus_text_and_readiness_from_the_admin() -> None:
    config = yaml.safe_load(render(layout()))
    stats = next(lis for lis in config["static_resources"]["listeners"] if lis["name"] == "stats")
    assert stats["address"]["socket_address"]["port_value"] == 9902
    manager = stats["filter_chains"][0]["filters"][0]["typed_config"]
    metrics, ready = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert metrics == {"match": {"path": "/metrics"},
                       "route": {"cluster": "envoy_admin", "prefix_rewrite": "/stats/prometheus"}}
    assert ready == {"match": {"path": "/ready", "headers": [
        {"name": ":method", "string_match": {"exact": "GET"}}]},
        "route": {"cluster": "envoy_admin"}}


def test_the_admin_interface_listens_on_loopback_only() -> None:
    config = yaml.safe_load(render(replace(layout(), bind_host="0.0.0.0")))
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    (endpoint,) = clusters["envoy_admin"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_tracing_is_configured_only_with_a_collector() -> None:
    def manager(config: dict[str, Any]) -> dict[str, Any]:
        listener = config["static_resources"]["listeners"][0]
        return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])

    assert "tracing" not in manager(yaml.safe_load(render(layout())))
    traced = yaml.safe_load(render(replace(layout(), otlp_collector=("otel.monitoring", 4317),
                                           trace_sample_ratio=0.25)))
    tracing = manager(traced)["tracing"]
    assert tracing["random_sampling"] == {"value": 25.0}
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    clusters = {c["name"]: c for c in traced["static_resources"]["clusters"]}
    assert clusters["otlp_collector"]["type"] == "STRICT_DNS"


@pytest.mark.parametrize("collector", [None, ("127.0.0.1", 4317)])
def test_envoy_accepts_the_config(tmp_path: Path, collector: tuple[str, int] | None) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render(replace(layout(), otlp_collector=collector)))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_transcoded_services_are_read_from_the_descriptor_set() -> None:
    services = transcoded_services(DESCRIPTOR)
    assert "cairn.project.v1.ProjectService" in services
    assert all(name.startswith("cairn.") for name in services)


def test_rest_rules_include_additional_bindings() -> None:
    rules = set(rest_rules(DESCRIPTOR))
    assert RestRule("GET", "/v1/projects/{project_id}") in rules
    assert RestRule("POST", "/oauth2/device/start") in rules  # an additional binding


def test_overlapping_templates_share_their_methods_in_405_routes() -> None:
    rules = [
        RestRule("GET", "/v1/projects/default"),
        RestRule("GET", "/v1/projects/{project_id}"),
        RestRule("DELETE", "/v1/projects/{project_id}"),
        RestRule("GET", "/v1/projects/{project_id}/actions"),
    ]
    routes = yaml.safe_load(textwrap.dedent(method_not_allowed_routes(rules)))
    allowed = {r["match"]["safe_regex"]["regex"]: r["response_headers_to_add"][0]["header"]["value"]
               for r in routes}
    assert allowed == {
        "^/v1/projects/default$": "DELETE, GET",
        "^/v1/projects/[^/]+$": "DELETE, GET",
        "^/v1/projects/[^/]+/actions$": "GET",
    }
    assert all(r["direct_response"]["status"] == 405 for r in routes)


def _manager(config: dict[str, Any]) -> dict[str, Any]:
    return dict(config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"])


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_manager(config)["route_config"]["virtual_hosts"][0]["routes"])


def test_client_timeouts_and_the_connection_limit_come_from_the_limits() -> None:
    limits = EdgeLimits(headers_timeout_seconds=3, idle_timeout_seconds=7,
                        request_timeout_seconds=11, transfer_timeout_seconds=13,
                        stream_timeout_seconds=17, max_connections=19)
    config = yaml.safe_load(render(replace(layout(), limits=limits, ledger_ws=("127.0.0.1", 2))))
    manager = _manager(config)
    assert manager["request_headers_timeout"] == "3s"
    assert manager["stream_idle_timeout"] == "7s"
    assert manager["common_http_protocol_options"] == {"idle_timeout": "7s",
                                                       "max_stream_duration": "11s"}
    (monitor,) = config["overload_manager"]["resource_monitors"]
    assert monitor["typed_config"]["max_active_downstream_connections"] == 19
    durations = {
        str(r["match"].get("prefix") or r["match"].get("safe_regex", {}).get("regex")):
            r["route"]["max_stream_duration"]["max_stream_duration"]
        for r in _routes(config) if "max_stream_duration" in r.get("route", {})
    }
    assert durations["/v1/stream/"] == "17s"
    assert durations["/cairn.ledger.v1.LedgerService/Stream"] == "17s"
    transfers = {k: v for k, v in durations.items() if k.startswith("^")}
    assert set(transfers.values()) == {"13s"} and len(transfers) == len(TRANSFER_METHODS)


def test_transfer_routes_name_real_methods_and_reach_their_service() -> None:
    config = yaml.safe_load(render(layout()))
    routes = [r for r in _routes(config) if "safe_regex" in r["match"]
              and r["match"]["safe_regex"]["regex"].startswith("^/cairn")]
    clusters = {r["match"]["safe_regex"]["regex"]: r["route"]["cluster"] for r in routes}
    assert sorted(clusters.values()) == ["component", "component", "ledger"]
    assert any("UploadDarFile" in regex for regex in clusters)
    with pytest.raises(ValueError, match="has no method"):
        transfer_routes(DESCRIPTOR, 1, {"cairn.ledger.v1.LedgerService": ("Teleport",)})


def test_ledger_routes_tell_the_lua_shaper_their_error_family() -> None:
    routes = _routes(yaml.safe_load(render(layout())))
    ledger = [r for r in routes if str(r["match"].get("prefix", "")).startswith(
        "/cairn.ledger.v1.")]
    assert ledger and all(
        r["metadata"]["filter_metadata"]["envoy.filters.http.lua"] == {"family": "ledger"}
        for r in ledger)


def test_limits_are_settings() -> None:
    settings = Settings.from_env({
        "CAIRN_ENVOY_HEADERS_TIMEOUT_SECONDS": "1", "CAIRN_ENVOY_IDLE_TIMEOUT_SECONDS": "2",
        "CAIRN_ENVOY_REQUEST_TIMEOUT_SECONDS": "3", "CAIRN_ENVOY_TRANSFER_TIMEOUT_SECONDS": "4",
        "CAIRN_ENVOY_STREAM_TIMEOUT_SECONDS": "5", "CAIRN_ENVOY_MAX_CONNECTIONS": "6",
    })
    assert EdgeLimits.from_settings(settings) == EdgeLimits(1, 2, 3, 4, 5, 6)
    assert EdgeLimits.from_settings(Settings.from_env({})) == EdgeLimits()
