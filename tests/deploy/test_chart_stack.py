"""The chart's pods as processes: what `helm install` + `helm test` would do, minus the cluster.

Every container the chart renders is started here from the image's own environment (the
Dockerfile's build stage carried out by `dockerfile.py`: a clean venv with only what the image
installs, generated protos, code under the image's `/app`), with exactly the environment its
pod would get (ConfigMap through envFrom, Secret values resolved from the rendered Secrets, so
the generated root token really flows from the chart to the auth service and to the test Pod).
Only what a cluster provides is stood in for: Service DNS names become 127.0.0.1, listeners
bind loopback instead of 0.0.0.0, an emptyDir becomes a temporary directory, and Redis and S3
are a local redis-server and moto server given to the chart as external stores. Readiness is
checked the way the kubelet would, with the probe each Deployment declares; then every service
answers one call through Envoy, the `helm test` Pod's own script runs against the stack, and
SIGTERM must stop every pod well within its grace period. A module the image does not install
fails here as it would in a cluster.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64decode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from cairn.auth.ledger_jwt import CLAIMS_NAMESPACE, DEFAULT_LEDGER_ID, encode_jwt_hs256
from cairn.runtime.server import CAIRN_SERVICES
from cairn.stack.launcher import _http_ok, _serving, free_port

from .conftest import RELEASE, Helm, Rendered, effective_values
from .dockerfile import ImageEnv

# Building the image's environment (a clean venv and pip install) takes about a minute on a quiet
# machine and several on a loaded one; the first test's setup pays for it.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FULLNAME = f"{RELEASE}-cairn"


@dataclass
class Pod:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def loopback(address: str) -> str:
    """`<release>-cairn-<svc>:<port>` -> `127.0.0.1:<port>`: what cluster DNS would resolve."""
    host, _, port = address.rpartition(":")
    assert host.startswith(f"{FULLNAME}-"), address
    return f"127.0.0.1:{port}"


def container_env(rendered: Rendered, spec: dict[str, Any]) -> dict[str, str]:
    """The environment the kubelet would give the pod's only container."""
    secrets = {s["metadata"]["name"]: s["data"] for s in rendered.of_kind("Secret")}
    (container,) = spec["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = b64decode(secrets[ref["name"]][ref["key"]]).decode()
    return env


def localize(env: dict[str, str], image: ImageEnv, run_dir: Path) -> dict[str, str]:
    """The pod's environment on this machine: the image's ENV under the container's own."""
    local = {**image.env, **env}
    for key, value in env.items():
        if key.endswith("_ADDR"):
            local[key] = loopback(value)
    local.update(
        CAIRN_BIND_HOST="127.0.0.1",  # this machine allows loopback only
        CAIRN_RUN_DIR=str(run_dir),
        CAIRN_LOG_FORMAT="console",
        TMPDIR=str(run_dir),
    )
    return local


def ledger_token(rendered: Rendered) -> str:
    """A token for Alice that the ledger pod accepts: signed with its secret when it verifies."""
    spec = rendered.get("Deployment", f"{FULLNAME}-ledger")["spec"]["template"]["spec"]
    env = container_env(rendered, spec)
    claims = {CLAIMS_NAMESPACE: {"ledgerId": env.get("CAIRN_LEDGER_ID", DEFAULT_LEDGER_ID),
                                 "applicationId": "chart-stack", "actAs": ["Alice"]}}
    return encode_jwt_hs256(claims, env.get("CAIRN_LEDGER_JWT_SECRET", "sandbox"))


def wait_until(ready: Any, pod: Pod, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if pod.process.poll() is not None:
            pytest.fail(f"{pod.name} exited ({pod.process.returncode}):\n{pod.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{pod.name} not ready ({what}) in {timeout}s:\n{pod.log_tail()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not _http_ok(f"http://127.0.0.1:{port}/moto-api/"):
            assert process.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class ChartStack:
    rendered: Rendered
    image: ImageEnv
    pods: dict[str, Pod]
    run_dir: Path

    def argv(self, container: dict[str, Any]) -> list[str]:
        """The container's command and args, its executable found on the image's PATH."""
        command = [*container["command"], *container.get("args", [])]
        return [self.image.which(command[0]), *command[1:]]


@pytest.fixture(scope="module")
def chart_stack(
    helm: Helm, image_env: ImageEnv, redis_url: str, moto_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChartStack]:
    ports = {name: free_port() for name in CAIRN_SERVICES}
    scrape_ports = {name: free_port() for name in CAIRN_SERVICES}
    http_port, admin_port, stats_port, ws_port = free_port(), free_port(), free_port(), free_port()
    overrides = [
        "redis.enabled=false", f"externalRedis.url={redis_url}",
        "minio.enabled=false", f"externalS3.endpoint={moto_endpoint}", "externalS3.secure=false",
        "externalS3.accessKey=testing", "externalS3.secretKey=testing",
        f"envoy.httpPort={http_port}", f"envoy.adminPort={admin_port}",
        f"envoy.service.port={http_port}", f"envoy.statsPort={stats_port}",
        *[f"services.{name}.port={port}" for name, port in ports.items()],
        f"services.ledger.wsPort={ws_port}",
        *[f"services.{name}.metricsPort={port}" for name, port in scrape_ports.items()],
    ]
    result = helm.template(set_values=overrides)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    values = effective_values("default")
    for name, port in ports.items():
        values["services"][name].update(port=port, metricsPort=scrape_ports[name])
    values["services"]["ledger"]["wsPort"] = ws_port
    values["envoy"].update(httpPort=http_port, adminPort=admin_port, statsPort=stats_port)
    rendered = Rendered("chart-stack", values, docs)
    run_dir = tmp_path_factory.mktemp("chart-stack")
    pods: dict[str, Pod] = {}
    stack = ChartStack(rendered, image_env, pods, run_dir)

    def start(name: str, container: dict[str, Any], env: dict[str, str]) -> Pod:
        pod_dir = run_dir / name
        pod_dir.mkdir()
        log_path = pod_dir / "pod.log"
        log = log_path.open("wb")
        process = subprocess.Popen(stack.argv(container), env=localize(env, image_env, pod_dir),
                                   cwd=image_env.app,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        pods[name] = Pod(name, process, log_path, log)
        return pods[name]

    try:
        # auth first: the other services resolve callers through it, as Envoy's ext_authz does.
        for service in ("auth", "project", "component", "ledger"):
            spec = rendered.get("Deployment", f"{FULLNAME}-{service}")["spec"]["template"]["spec"]
            (container,) = spec["containers"]
            probe = container["readinessProbe"]["grpc"]
            pod = start(service, container, container_env(rendered, spec))
            wait_until(lambda p=probe: _serving(f"127.0.0.1:{p['port']}", p["service"]), pod,
                       "gRPC readiness probe")
        spec = rendered.get("Deployment", f"{FULLNAME}-envoy")["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        pod = start("envoy", container, container_env(rendered, spec))
        ready = container["readinessProbe"]["httpGet"]
        assert ready["port"] == stats_port
        wait_until(lambda: _http_ok(f"http://127.0.0.1:{stats_port}{ready['path']}"), pod,
                   "/ready on the stats port")
        yield stack
    finally:
        for pod in pods.values():
            if pod.process.poll() is None:
                pod.process.kill()
                pod.process.wait(10)
            pod.log.close()


def test_the_image_can_export_traces(image_env: ImageEnv) -> None:
    # xds-protos ships an old copy of opentelemetry/proto/*; with it, a traced service exits.
    probe = ("from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter")
    result = subprocess.run([image_env.which("python"), "-c", probe], env=image_env.env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_helm_test_pod_script_passes_against_the_chart_configured_stack(
    chart_stack: ChartStack,
) -> None:
    (test_pod,) = chart_stack.rendered.of_kind("Pod")
    env = container_env(chart_stack.rendered, test_pod["spec"])
    api_host = env["CAIRN_TEST_API"].removeprefix("http://")
    env["CAIRN_TEST_API"] = "http://" + loopback(api_host)
    env["CAIRN_TEST_SERVICES"] = " ".join(
        f"{loopback(address)}={service}"
        for address, service in (p.split("=") for p in env["CAIRN_TEST_SERVICES"].split())
    )
    (container,) = test_pod["spec"]["containers"]
    result = subprocess.run(
        chart_stack.argv(container), env={**chart_stack.image.env, **env},
        cwd=chart_stack.image.app, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert "GET /v1/projects with the root token: 200" in lines
    assert "GET /v1/projects without a token: 401" in lines
    for name, health in CAIRN_SERVICES.items():
        port = chart_stack.rendered.values["services"][name]["port"]
        assert f"{health} at 127.0.0.1:{port}: SERVING" in lines


def test_every_service_answers_a_call_through_envoy(chart_stack: ChartStack) -> None:
    """One real call per service, each through ext_authz (auth) to its service."""
    rendered = chart_stack.rendered
    auth = rendered.get("Deployment", f"{FULLNAME}-auth")["spec"]["template"]["spec"]
    root = {"Authorization": f"Bearer {container_env(rendered, auth)['CAIRN_ROOT_TOKEN']}"}
    ledger = {"Authorization": f"Bearer {ledger_token(rendered)}"}
    api = f"http://127.0.0.1:{rendered.values['envoy']['httpPort']}"
    with httpx.Client(base_url=api, timeout=30) as client:
        projects = client.get("/v1/projects", headers=root)
        assert projects.status_code == 200, projects.text
        assert [p["projectData"]["name"] for p in projects.json()] == ["default-project"]
        components = client.get("/v1/components", headers=root)
        assert components.status_code == 200, components.text
        assert components.json() == []
        packages = client.get("/v1/packages", headers=ledger)
        assert packages.status_code == 200, packages.text
        assert packages.json() == {"status": 200, "result": []}


def test_every_pod_serves_prometheus_text_on_its_declared_metrics_port(
    chart_stack: ChartStack,
) -> None:
    """What the PodMonitor or the prometheus.io annotations point Prometheus at."""
    for deployment in chart_stack.rendered.of_kind("Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        if component not in {*CAIRN_SERVICES, "envoy"}:
            continue
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert reply.status_code == 200, component
        families = {f.name for f in text_string_to_metric_families(reply.text)}
        wanted = "envoy_cluster_upstream_rq" if component == "envoy" else "grpc_server_handled"
        assert wanted in families, (component, sorted(families)[:20])


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_every_pod_stops_on_sigterm_within_its_grace_period(chart_stack: ChartStack) -> None:
    """The services first; then Envoy, after its preStop hook drained it (the kubelet runs the
    hook, then SIGTERM): its /ready on the stats port must have turned 503 by then."""
    values = chart_stack.rendered.values
    # The kubelet runs the preStop sleep first; SIGTERM gets what is left of the grace period.
    grace = values["terminationGracePeriodSeconds"] - values["preStopSleepSeconds"]
    services = [pod for name, pod in chart_stack.pods.items() if name != "envoy"]
    stop(services, grace)
    drain_envoy(chart_stack)
    stop([chart_stack.pods["envoy"]], grace)


def stop(pods: list[Pod], grace: float) -> None:
    for pod in pods:
        pod.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pod in pods:
        try:
            code = pod.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{pod.name} still running {grace}s after SIGTERM:\n{pod.log_tail()}")
        assert code == 0, f"{pod.name} exited {code}:\n{pod.log_tail()}"


def drain_envoy(chart_stack: ChartStack) -> None:
    """Run Envoy's preStop command (without its wait): Envoy fails its health check through the
    loopback admin port and drains, so /ready on the stats port turns 503."""
    rendered = chart_stack.rendered
    spec = rendered.get("Deployment", f"{FULLNAME}-envoy")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command == ["python", "-m", "cairn.stack.drain"]
    ready = f"http://127.0.0.1:{rendered.values['envoy']['statsPort']}/ready"
    assert _http_status(ready) == 200
    env = localize(container_env(rendered, spec), chart_stack.image, chart_stack.run_dir)
    env["CAIRN_ENVOY_DRAIN_SECONDS"] = "0.01"  # the kubelet would wait preStopSleepSeconds
    drained = subprocess.run(chart_stack.argv({"command": command}), env=env,
                             cwd=chart_stack.image.app, capture_output=True, text=True,
                             timeout=60, check=False)
    assert drained.returncode == 0, drained.stderr
    assert _http_status(ready) == 503
