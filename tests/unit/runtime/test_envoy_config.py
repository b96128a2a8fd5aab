"""The rendered Envoy config is accepted by the real Envoy binary (`--mode validate`)."""

import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from cairn.stack.envoy_config import (
    EnvoyLayout,
    RestRule,
    method_not_allowed_routes,
    render,
    rest_rules,
    transcoded_services,
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
