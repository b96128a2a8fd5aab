"""`python -m cairn.stack.edge`: Envoy's config from the environment the chart gives the pod.

The end-to-end check takes the Envoy container's environment out of the rendered chart (its
ConfigMap through envFrom, plus its own env), runs the real module with it, and lets the real
Envoy binary validate the result (`--mode validate`, passed through by the module).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from cairn.runtime.settings import DEFAULT_PORTS
from cairn.stack.edge import EdgeConfigError, EdgeSettings, envoy_argv, parse_address, write_config
from cairn.stack.launcher import DESCRIPTOR, REPO_ROOT

from .conftest import RELEASE, SCENARIOS, Helm, Rendered, render


def pod_environment(rendered: Rendered, deployment: str) -> dict[str, str]:
    """The literal environment a container of `deployment` starts with (no secrets resolved)."""
    spec = rendered.get("Deployment", deployment)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def test_parse_address_accepts_dns_names_and_ipv4() -> None:
    assert parse_address("X", "rel-cairn-auth:20053") == ("rel-cairn-auth", 20053)
    assert parse_address("X", "auth.ns.svc.cluster.local:1") == ("auth.ns.svc.cluster.local", 1)
    assert parse_address("X", " 10.0.0.7:65535 ") == ("10.0.0.7", 65535)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("rel-cairn-auth", "must be host:port"),
        (":50053", "must be host:port"),
        ("auth:http", "invalid port"),
        ("auth:0", "invalid port"),
        ("auth:65536", "invalid port"),
        ("bad_host:50053", "invalid host"),
        ("-auth:50053", "invalid host"),
        ("http://auth:50053", "invalid host"),
    ],
)
def test_parse_address_rejects_what_envoy_cannot_connect_to(raw: str, problem: str) -> None:
    with pytest.raises(EdgeConfigError, match=problem) as caught:
        parse_address("CAIRN_AUTH_ADDR", raw)
    assert "CAIRN_AUTH_ADDR" in str(caught.value)


def test_defaults_match_make_run(tmp_path: Path) -> None:
    settings = EdgeSettings.from_env({"CAIRN_RUN_DIR": str(tmp_path)})
    assert settings.layout.bind_host == "127.0.0.1"
    assert (settings.layout.http_port, settings.layout.admin_port) == (8080, 9901)
    assert settings.layout.upstreams == {s: ("127.0.0.1", p) for s, p in DEFAULT_PORTS.items()}
    assert settings.layout.descriptor_path == DESCRIPTOR.resolve()
    assert settings.config_path == tmp_path / "envoy.yaml"
    assert (settings.concurrency, settings.log_level) == (2, "warning")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CAIRN_HTTP_PORT": "eighty"}, "CAIRN_HTTP_PORT"),
        ({"CAIRN_HTTP_PORT": "70000"}, "CAIRN_HTTP_PORT"),
        ({"CAIRN_ENVOY_ADMIN_PORT": "0"}, "CAIRN_ENVOY_ADMIN_PORT"),
        ({"CAIRN_ENVOY_CONCURRENCY": "0"}, "CAIRN_ENVOY_CONCURRENCY"),
        ({"CAIRN_ENVOY_CONCURRENCY": "many"}, "CAIRN_ENVOY_CONCURRENCY"),
        ({"CAIRN_ENVOY_LOG_LEVEL": "loud"}, "CAIRN_ENVOY_LOG_LEVEL"),
        ({"CAIRN_LEDGER_ADDR": "ledger"}, "CAIRN_LEDGER_ADDR"),
        ({"CAIRN_LEDGER_WS_ADDR": "ledger"}, "CAIRN_LEDGER_WS_ADDR"),
        ({"CAIRN_LEDGER_WS_PORT": "ws"}, "CAIRN_LEDGER_WS_PORT"),
        ({"CAIRN_ENVOY_DESCRIPTOR": "/nonexistent/cairn.binpb"}, "CAIRN_ENVOY_DESCRIPTOR"),
        ({"CAIRN_GRPC_MAX_MESSAGE_BYTES": "0"}, "CAIRN_GRPC_MAX_MESSAGE_BYTES"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(EdgeConfigError, match=named):
        EdgeSettings.from_env(env)


def test_the_stream_upstream_defaults_to_the_ledger_host_and_its_stream_port() -> None:
    settings = EdgeSettings.from_env({"CAIRN_LEDGER_ADDR": "ledger.ns:7000",
                                      "CAIRN_LEDGER_WS_PORT": "7001"})
    assert settings.layout.ledger_ws == ("ledger.ns", 7001)
    assert EdgeSettings.from_env({}).layout.ledger_ws == ("127.0.0.1", 20055)
    # Like the ledger itself: without CAIRN_LEDGER_WS_PORT, the port after its gRPC port.
    assert EdgeSettings.from_env({"CAIRN_LEDGER_GRPC_PORT": "6000"}).layout.ledger_ws == (
        "127.0.0.1", 6001)
    explicit = EdgeSettings.from_env({"CAIRN_LEDGER_WS_ADDR": "streams:9000"})
    assert explicit.layout.ledger_ws == ("streams", 9000)


def test_envoy_argv_passes_extra_arguments_through(tmp_path: Path) -> None:
    settings = EdgeSettings.from_env({
        "CAIRN_ENVOY_CONFIG": str(tmp_path / "e.yaml"), "CAIRN_ENVOY_CONCURRENCY": "4",
        "CAIRN_ENVOY_LOG_LEVEL": "INFO", "CAIRN_ENVOY_DRAIN_SECONDS": "7",
    })
    assert envoy_argv("/bin/envoy", settings, ["--mode", "validate"]) == [
        "/bin/envoy", "-c", str((tmp_path / "e.yaml").resolve()), "--disable-hot-restart",
        "--concurrency", "4", "-l", "info", "--drain-strategy", "immediate", "--drain-time-s",
        "7", "--file-flush-interval-msec", "1000", "--mode", "validate",
    ]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_environment_renders_dns_upstreams_for_every_service(
    helm: Helm, scenario: str, tmp_path: Path
) -> None:
    rendered = render(helm, scenario)
    env = pod_environment(rendered, f"{RELEASE}-cairn-envoy")
    env["CAIRN_RUN_DIR"] = str(tmp_path)
    settings = EdgeSettings.from_env(env)
    config = yaml.safe_load(write_config(settings).read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert set(clusters) == {*DEFAULT_PORTS, "ledger_ws", "envoy_admin"}
    # The admin interface is reachable on loopback only; the stats listener proxies /metrics
    # and /ready to it.
    admin = config["admin"]["address"]["socket_address"]
    assert admin == {"address": "127.0.0.1", "port_value": rendered.values["envoy"]["adminPort"]}
    admin_cluster = clusters.pop("envoy_admin")["load_assignment"]["endpoints"][0]
    assert admin_cluster["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == admin
    for name, cluster in clusters.items():
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert cluster["type"] == "STRICT_DNS"
        service, _, kind = name.partition("_")
        port = rendered.values["services"][service]["wsPort" if kind == "ws" else "port"]
        assert address == {"address": f"{RELEASE}-cairn-{service}", "port_value": port}
    listeners = {listener["name"]: listener["address"]["socket_address"]
                 for listener in config["static_resources"]["listeners"]}
    assert listeners == {
        "cairn": {"address": "0.0.0.0", "port_value": rendered.values["envoy"]["httpPort"]},
        "stats": {"address": "0.0.0.0", "port_value": rendered.values["envoy"]["statsPort"]},
    }
    envoy = rendered.get("Deployment", f"{RELEASE}-cairn-envoy")["spec"]["template"]["spec"]
    declared = {p["name"]: p["containerPort"] for p in envoy["containers"][0]["ports"]}
    # The stats listener also answers the kubelet's readiness probe (/ready); it is named
    # "metrics" when Prometheus scrapes it (PodMonitor, annotations, NetworkPolicy).
    stats = "metrics" if rendered.values["metrics"]["enabled"] else "stats"
    assert declared == {"http": listeners["cairn"]["port_value"],
                        stats: listeners["stats"]["port_value"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_real_envoy_validates_what_the_module_renders_from_the_chart(
    helm: Helm, tmp_path: Path, scenario: str
) -> None:
    rendered = render(helm, scenario)
    env = pod_environment(rendered, f"{RELEASE}-cairn-envoy")
    # The pod's /var/run/cairn is an emptyDir; here a temporary directory stands in for it.
    env.update(CAIRN_RUN_DIR=str(tmp_path), PATH=os.environ.get("PATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "cairn.stack.edge", "--mode", "validate"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"configuration '{tmp_path / 'envoy.yaml'}' OK" in result.stdout


def test_module_reports_bad_environment_without_starting_envoy(tmp_path: Path) -> None:
    env = {"CAIRN_RUN_DIR": str(tmp_path), "CAIRN_AUTH_ADDR": "auth",
           "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "cairn.stack.edge"], env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "CAIRN_AUTH_ADDR must be host:port" in result.stderr
    assert not (tmp_path / "envoy.yaml").exists()
