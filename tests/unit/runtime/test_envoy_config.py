"""The rendered Envoy config is accepted by the real Envoy binary (`--mode validate`)."""

import subprocess
import textwrap
from pathlib import Path

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
    assert clusters == {"project", "auth", "component", "ledger"}


def test_dns_names_use_strict_dns_clusters() -> None:
    config = yaml.safe_load(render(layout(project=("project.cairn.svc", 50051))))
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"


def test_envoy_accepts_the_config(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render(layout()))
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
