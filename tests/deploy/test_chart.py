"""The Helm chart: lint, render per scenario, strict Kubernetes schemas, and what schemas miss.

Schemas cannot see API-server semantics (selectors that match nothing, over-long port names,
probes on undeclared ports, references to Secrets that do not exist), so those are asserted
here over the rendered objects of every scenario in deploy/helm/cairn/ci/.
"""

from __future__ import annotations

import re
import uuid
from base64 import b64decode
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from minio.credentials.providers import IamAwsProvider

from cairn.auth.ledger_jwt import LedgerTokenPolicy
from cairn.blobstore.factory import blob_store_from_env
from cairn.blobstore.s3 import S3BlobStore
from cairn.runtime.server import CAIRN_SERVICES
from cairn.runtime.settings import DEFAULT_PORTS, METRICS_PORT_OFFSET, Settings
from cairn.stack.launcher import REPO_ROOT

from .conftest import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Helm,
    Rendered,
    effective_values,
    render,
    values_file,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Service names are stricter (RFC 1035): they must start with a letter.
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# IANA_SVC_NAME: at most 15 characters, lowercase alphanumerics and single inner hyphens.
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?=[a-z0-9]))*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

Manifest = dict[str, Any]
# The Prometheus Operator's API group (PodMonitor), a CRD the Kubernetes schemas do not know.
MONITORING_API = "monitoring.coreos.com"


def containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def external_secrets(values: dict[str, Any]) -> set[str]:
    """Secrets the scenario says the user manages (existingSecret values)."""
    redis = values["externalRedis"]
    names = {values["secrets"]["existingSecret"], redis["existingSecret"],
             redis["passwordSecret"]["name"], redis["sentinel"]["passwordSecret"]["name"],
             redis["tls"]["caSecret"]["name"], values["externalS3"]["existingSecret"],
             values["redis"]["auth"]["existingSecret"], values["minio"]["auth"]["existingSecret"],
             values["ledger"]["auth"]["existingSecret"]}
    return {n for n in names if n}


def test_lint_strict_passes_for_every_scenario(helm: Helm) -> None:
    for scenario in SCENARIOS:
        result = helm.run("lint", "--strict", str(CHART), "-f", str(CHART / "ci" /
                          f"{scenario}-values.yaml"))
        assert result.returncode == 0, f"{scenario}:\n{result.stdout}\n{result.stderr}"


# About 2 s per scenario and version (kubernetes-validate compiles schemas on every call).
@pytest.mark.e2e
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_document_passes_the_strict_kubernetes_schema(
    helm: Helm, scenario: str, kube_version: str
) -> None:
    docs = render(helm, scenario, kube_version).docs
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith(f"{MONITORING_API}/"):
            continue  # a CRD's kind: test_prometheus_finds_every_metrics_port checks it
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in err.path)
            pytest.fail(f"{scenario} {doc['kind']}/{doc['metadata']['name']} at {where}: "
                        f"{err.message}")


def test_chart_refuses_kubernetes_without_grpc_probes(helm: Helm) -> None:
    result = helm.template(kube_version="1.26.0")
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "1.29" in result.stderr


def test_names_and_labels_are_valid_dns_labels(rendered: Rendered) -> None:
    for doc in rendered.docs:
        name = doc["metadata"]["name"]
        pattern = DNS_1035_LABEL if doc["kind"] == "Service" else DNS_LABEL
        assert len(name) <= 63 and pattern.match(name), f"{doc['kind']} name {name!r}"
        for key, value in doc["metadata"].get("labels", {}).items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), f"{name}: label {key}={value!r}"


def test_long_release_names_still_give_valid_names(helm: Helm) -> None:
    long_release = "a" * 53
    result = helm.run("template", long_release, str(CHART), "-n", NAMESPACE)
    assert result.returncode == 0, result.stderr
    for doc in yaml.safe_load_all(result.stdout):
        if doc:
            name = doc["metadata"]["name"]
            assert len(name) <= 63 and DNS_1035_LABEL.match(name), name


def test_port_names_are_iana_service_names(rendered: Rendered) -> None:
    named: list[str] = []
    for _, spec in rendered.pod_specs():
        for container in containers(spec):
            named += [p["name"] for p in container.get("ports", [])]
    for service in rendered.of_kind("Service"):
        named += [p["name"] for p in service["spec"]["ports"]]
    assert named
    for name in named:
        assert len(name) <= 15 and PORT_NAME.match(name), f"port name {name!r}"


def test_deployment_selectors_select_their_own_pods(rendered: Rendered) -> None:
    for deployment in rendered.of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(selector, labels), deployment["metadata"]["name"]
        # No other Deployment may be selected too: selectors must not overlap.
        for other in rendered.of_kind("Deployment"):
            if other is not deployment:
                assert not matches(selector, other["spec"]["template"]["metadata"]["labels"])


def test_services_select_pods_that_declare_their_target_ports(rendered: Rendered) -> None:
    for service in rendered.of_kind("Service"):
        selector = service["spec"]["selector"]
        pods = [d["spec"]["template"] for d in rendered.of_kind("Deployment")
                if matches(selector, d["spec"]["template"]["metadata"]["labels"])]
        assert len(pods) == 1, f"Service {service['metadata']['name']} selects {len(pods)}"
        declared = {p["name"]: p["containerPort"]
                    for c in pods[0]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in declared or target in declared.values(), (
                f"Service {service['metadata']['name']} targets undeclared port {target!r}"
            )


def test_probes_point_at_declared_ports(rendered: Rendered) -> None:
    for owner, spec in rendered.pod_specs():
        for container in containers(spec):
            declared = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                handler = probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket")
                assert handler is not None, f"{owner}: {kind} has no handler"
                port = handler["port"]
                assert port in declared or port in declared.values(), (
                    f"{owner}/{container['name']}: {kind} on undeclared port {port!r}"
                )


def test_cairn_services_have_native_grpc_probes_for_their_health_names(
    rendered: Rendered,
) -> None:
    for service, health_name in CAIRN_SERVICES.items():
        deployment = rendered.get("Deployment", f"{RELEASE}-cairn-{service}")
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", f"cairn.{service}"]
        port = rendered.values["services"][service]["port"]
        expected_ports = [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
        ws_port = rendered.values["services"][service].get("wsPort")
        if ws_port is not None:
            expected_ports.append({"name": "ws", "containerPort": ws_port, "protocol": "TCP"})
        if rendered.values["metrics"]["enabled"]:
            expected_ports.append({"name": "metrics", "containerPort": metrics_port(
                rendered.values, service), "protocol": "TCP"})
        assert container["ports"] == expected_ports
        # Readiness follows the service's dependencies; startup and liveness only the process.
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": health_name}
        for kind in ("startupProbe", "livenessProbe"):
            assert container[kind]["grpc"] == {"port": port}, kind
        # The pod must outlive the preStop delay plus the service's own drain after SIGTERM.
        assert pod["terminationGracePeriodSeconds"] > (
            rendered.values["preStopSleepSeconds"] + rendered.values["shutdownGraceSeconds"]
        )
        assert container["lifecycle"]["preStop"]["exec"]["command"] == [
            "sleep", str(rendered.values["preStopSleepSeconds"])
        ]
        settings = rendered.values["services"][service]
        assert deployment["spec"].get("replicas") == (
            None if settings["autoscaling"]["enabled"] else settings["replicas"])


def test_envoy_drains_in_its_prestop_hook(rendered: Rendered) -> None:
    deployment = rendered.get("Deployment", f"{RELEASE}-cairn-envoy")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "python", "-m", "cairn.stack.drain"
    ]
    config = rendered.get("ConfigMap", f"{RELEASE}-cairn-config")["data"]
    assert config["CAIRN_ENVOY_DRAIN_SECONDS"] == str(rendered.values["preStopSleepSeconds"])


def test_backend_services_are_headless_h2c(rendered: Rendered) -> None:
    for service in CAIRN_SERVICES:
        spec = rendered.get("Service", f"{RELEASE}-cairn-{service}")["spec"]
        assert spec["clusterIP"] == "None"
        expected = [("grpc", "kubernetes.io/h2c")]
        if rendered.values["services"][service].get("wsPort") is not None:
            expected.append(("ws", "kubernetes.io/ws"))
        assert [(p["name"], p["appProtocol"]) for p in spec["ports"]] == expected


def test_the_ledger_exposes_its_websocket_port_to_the_edge(rendered: Rendered) -> None:
    ws_port = rendered.values["services"]["ledger"]["wsPort"]
    data = rendered.get("ConfigMap", f"{RELEASE}-cairn-config")["data"]
    assert data["CAIRN_LEDGER_WS_PORT"] == str(ws_port)
    assert data["CAIRN_LEDGER_WS_ADDR"] == f"{RELEASE}-cairn-ledger:{ws_port}"
    service = rendered.get("Service", f"{RELEASE}-cairn-ledger")["spec"]
    (ws,) = [p for p in service["ports"] if p["name"] == "ws"]
    assert (ws["port"], ws["targetPort"]) == (ws_port, "ws")


def test_config_map_agrees_with_services_and_settings(rendered: Rendered) -> None:
    data = rendered.get("ConfigMap", f"{RELEASE}-cairn-config")["data"]
    assert all(isinstance(v, str) for v in data.values())
    assert data["CAIRN_BIND_HOST"] == "0.0.0.0"
    assert set(DEFAULT_PORTS) == set(CAIRN_SERVICES)
    for service in DEFAULT_PORTS:
        port = rendered.values["services"][service]["port"]
        assert data[f"CAIRN_{service.upper()}_GRPC_PORT"] == str(port)
        assert data[f"CAIRN_{service.upper()}_ADDR"] == f"{RELEASE}-cairn-{service}:{port}"
        rendered.get("Service", f"{RELEASE}-cairn-{service}")
    if rendered.values["minio"]["enabled"]:
        assert data["CAIRN_S3_ENDPOINT"] == f"http://{RELEASE}-cairn-minio:9000"
        rendered.get("Service", f"{RELEASE}-cairn-minio")
    else:
        assert data["CAIRN_S3_ENDPOINT"] == rendered.values["externalS3"]["endpoint"]


def test_every_container_is_hardened(rendered: Rendered) -> None:
    for owner, spec in rendered.pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        assert spec["automountServiceAccountToken"] is False, owner
        for container in containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, owner
            assert context["allowPrivilegeEscalation"] is False, owner
            assert context["capabilities"]["drop"] == ["ALL"], owner
            assert container["resources"].get("requests"), f"{owner}: no resource requests"


def test_referenced_secrets_config_maps_and_claims_exist(rendered: Rendered) -> None:
    secrets = {s["metadata"]["name"]: set(s["data"]) for s in rendered.of_kind("Secret")}
    config_maps = {c["metadata"]["name"] for c in rendered.of_kind("ConfigMap")}
    claims = {c["metadata"]["name"] for c in rendered.of_kind("PersistentVolumeClaim")}
    external = external_secrets(rendered.values)
    for owner, spec in rendered.pod_specs():
        for container in containers(spec):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, owner
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                if ref["name"] in external:
                    continue
                assert ref["name"] in secrets, f"{owner}: Secret {ref['name']} is not rendered"
                assert ref["key"] in secrets[ref["name"]], f"{owner}: {ref['name']}/{ref['key']}"
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, owner
    # Whatever the user manages is never also generated (helm would fight them over it).
    assert not external & set(secrets)


def test_data_volumes_survive_uninstall(rendered: Rendered) -> None:
    claims = rendered.of_kind("PersistentVolumeClaim")
    expected = {f"{RELEASE}-cairn-{store}" for store in ("redis", "minio")
                if rendered.values[store]["enabled"]
                and rendered.values[store]["persistence"]["enabled"]}
    assert {c["metadata"]["name"] for c in claims} == expected
    for claim in claims:
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_each_service_receives_only_the_credentials_it_needs(rendered: Rendered) -> None:
    config = rendered.get("ConfigMap", f"{RELEASE}-cairn-config")["data"]
    verified = rendered.values["ledger"]["auth"]["mode"] == "hs256"
    for service in CAIRN_SERVICES:
        spec = rendered.get("Deployment", f"{RELEASE}-cairn-{service}")["spec"]["template"]["spec"]
        names = {e["name"] for e in spec["containers"][0]["env"]}
        assert {"CAIRN_ROOT_TOKEN", "CAIRN_INTERNAL_SECRET"} <= names
        redis = {"CAIRN_REDIS_URL", "CAIRN_REDIS_SENTINELS", "CAIRN_REDIS_CLUSTER_NODES"}
        assert (names | set(config)) & redis, f"{service} has no Redis"
        assert ("CAIRN_S3_SECRET_KEY" in names) == (
            service in ("component", "ledger") and rendered.values["externalS3"]["credentials"]
            == "static" and bool(rendered.values["minio"]["enabled"]
                                 or rendered.values["externalS3"]["existingSecret"]
                                 or rendered.values["externalS3"]["accessKey"])), service
        # Only the two services that verify ledger JWTs get the ledger's token key.
        assert ("CAIRN_LEDGER_JWT_SECRET" in names) == (
            verified and service in ("auth", "ledger")), service
    envoy = rendered.get("Deployment", f"{RELEASE}-cairn-envoy")["spec"]["template"]["spec"]
    assert "env" not in envoy["containers"][0], "Envoy needs no secrets"


def test_generated_credentials_are_random_and_well_formed(helm: Helm) -> None:
    first, second = render(helm, "default"), render(helm, "default")

    def secret_data(r: Rendered) -> dict[str, str]:
        merged: dict[str, str] = {}
        for s in r.of_kind("Secret"):
            merged.update({k: b64decode(v).decode() for k, v in s["data"].items()})
        return merged

    a, b = secret_data(first), secret_data(second)
    assert set(a) == {"root-token", "internal-secret", "redis-password", "s3-access-key",
                      "s3-secret-key", "ledger-jwt-secret"}
    for key in ("root-token", "internal-secret", "redis-password", "s3-secret-key",
                "ledger-jwt-secret"):
        assert a[key] != b[key], f"{key} is not generated"
    uuid.UUID(a["root-token"])  # auth and the stack launcher accept only UUID tokens
    assert len(a["internal-secret"]) == 64
    assert len(a["ledger-jwt-secret"]) == 64
    # The bundled Redis's URL names no password: the services get it apart, from the Secret.
    config = first.get("ConfigMap", f"{RELEASE}-cairn-config")["data"]
    assert config["CAIRN_REDIS_URL"] == f"redis://{RELEASE}-cairn-redis:6379/0"
    # No credential may sit in the ConfigMap (it is readable with fewer permissions).
    assert not set(a.values()) & set(config.values())


def test_pods_roll_when_the_configuration_changes(helm: Helm) -> None:
    def checksum(*set_values: str) -> str:
        result = helm.template(set_values=set_values)
        assert result.returncode == 0, result.stderr
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        sums = {d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["labels"]["app.kubernetes.io/component"] in
                {*CAIRN_SERVICES, "envoy"}}
        assert len(sums) == 1
        return str(sums.pop())

    assert checksum() == checksum()
    assert checksum() != checksum("log.level=debug")


def test_network_policies_open_only_envoys_http_port_and_metrics_to_scrapers(
    rendered: Rendered,
) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    if not rendered.values["networkPolicy"]["enabled"]:
        assert policies == []
        return
    metrics = rendered.values["metrics"]
    scrape_rules: list[Manifest] = []
    if metrics["enabled"]:
        scrape_rules = [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
        if metrics["scrapers"]:
            scrape_rules[0]["from"] = metrics["scrapers"]
    envoy_policy = rendered.get("NetworkPolicy", f"{RELEASE}-cairn-envoy")
    assert envoy_policy["spec"]["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}]}, *scrape_rules]
    internal = rendered.get("NetworkPolicy", f"{RELEASE}-cairn-internal")
    assert internal["spec"]["ingress"][1:] == scrape_rules
    allowed = internal["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    # Every pod of the release (services, Envoy, the helm test Pod) may call the others.
    for owner, _ in rendered.pod_specs():
        labels = next(
            (d["spec"]["template"]["metadata"]["labels"] for d in rendered.of_kind("Deployment")
             if d["metadata"]["name"] == owner),
            None,
        ) or rendered.get("Pod", owner)["metadata"]["labels"]
        assert matches(allowed, labels), owner


def test_disruption_budgets_cover_exactly_the_replicated_components(rendered: Rendered) -> None:
    budgets = {b["metadata"]["name"]: b for b in rendered.of_kind("PodDisruptionBudget")}
    def least(component: dict[str, Any]) -> int:
        scaling = component["autoscaling"]
        return int(scaling["minReplicas"] if scaling["enabled"] else component["replicas"])

    components = {**rendered.values["services"], "envoy": rendered.values["envoy"]}
    replicated = {f"{RELEASE}-cairn-{name}" for name, c in components.items() if least(c) > 1}
    expected = replicated if rendered.values["podDisruptionBudget"]["enabled"] else set()
    assert set(budgets) == expected
    for name, budget in budgets.items():
        deployment = rendered.get("Deployment", name)
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_helm_test_pod_checks_rest_through_envoy_and_each_service(rendered: Rendered) -> None:
    pods = rendered.of_kind("Pod")
    if not rendered.values["tests"]["enabled"]:
        assert pods == []
        return
    (pod,) = pods
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    envoy_service = rendered.get("Service", f"{RELEASE}-cairn-envoy")
    assert env["CAIRN_TEST_API"]["value"] == (
        f"http://{RELEASE}-cairn-envoy:{envoy_service['spec']['ports'][0]['port']}"
    )
    targets = dict(pair.split("=") for pair in env["CAIRN_TEST_SERVICES"]["value"].split())
    assert targets == {
        f"{RELEASE}-cairn-{name}:{rendered.values['services'][name]['port']}": health
        for name, health in CAIRN_SERVICES.items()
    }
    assert env["CAIRN_ROOT_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == (
        rendered.values["secrets"]["rootTokenKey"]
    )
    assert container["command"] == ["python", "-c"]
    script = container["args"][0]
    compile(script, "helm-test", "exec")  # the check users run must at least be valid Python
    assert '"/v1/projects"' in script and "Bearer " in script
    assert '"/v1/stream/query"' in script  # the WebSocket route reaches the ledger's streams


def test_envoy_is_exposed_by_a_service_of_the_configured_type(rendered: Rendered) -> None:
    service = rendered.get("Service", f"{RELEASE}-cairn-envoy")
    config = rendered.values["envoy"]["service"]
    assert service["spec"]["type"] == config["type"]
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", config["port"], "http")
    assert port.get("nodePort") == (config["nodePort"] if config["type"] != "ClusterIP" else None)
    ingresses = rendered.of_kind("Ingress")
    assert len(ingresses) == int(rendered.values["ingress"]["enabled"])
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {
                    "name": f"{RELEASE}-cairn-envoy", "port": {"name": "http"}
                }


def test_notes_render_with_the_real_service_and_secret_names(pinned_helm: Helm) -> None:
    # Only helm v4 renders NOTES.txt without a cluster (`install --dry-run=client`).
    result = pinned_helm.run("install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"port-forward svc/{RELEASE}-cairn-envoy 8080:8080" in notes
    assert f"get secret {RELEASE}-cairn -o jsonpath='{{.data.root-token}}'" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes


def metrics_port(values: dict[str, Any], service: str) -> int:
    """A service's scrape port as the chart and the service itself default it."""
    svc = values["services"][service]
    return int(svc.get("metricsPort") or svc["port"] + METRICS_PORT_OFFSET)


def metrics_ports(rendered: Rendered) -> dict[str, int]:
    """Deployment name -> the containerPort named "metrics" of its pods (when it has one)."""
    found = {}
    for deployment in rendered.of_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for port in container.get("ports", []):
                if port["name"] == "metrics":
                    found[deployment["metadata"]["name"]] = port["containerPort"]
    return found


def test_every_cairn_pod_declares_the_metrics_port_it_serves(rendered: Rendered) -> None:
    """The chart's ports and the processes' settings agree: each service scrapes where its
    pod declares, Envoy's stats listener where the Envoy pod declares."""
    config = rendered.get("ConfigMap", f"{RELEASE}-cairn-config")["data"]
    enabled = rendered.values["metrics"]["enabled"]
    settings = Settings.from_env(config)
    assert settings.metrics_enabled is enabled
    declared = metrics_ports(rendered)
    if not enabled:
        assert declared == {}
        return
    expected = {f"{RELEASE}-cairn-{s}": metrics_port(rendered.values, s) for s in CAIRN_SERVICES}
    expected[f"{RELEASE}-cairn-envoy"] = rendered.values["envoy"]["statsPort"]
    assert declared == expected
    for service in CAIRN_SERVICES:
        assert settings.metrics_port(service) == declared[f"{RELEASE}-cairn-{service}"]
    assert settings.envoy_stats_port == declared[f"{RELEASE}-cairn-envoy"]


def _scrape_annotations(rendered: Rendered) -> dict[str, dict[str, str]]:
    found = {}
    for deployment in rendered.of_kind("Deployment"):
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        scrape = {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")}
        if scrape:
            found[deployment["metadata"]["name"]] = scrape
    return found


def test_prometheus_finds_every_metrics_port(rendered: Rendered) -> None:
    """A PodMonitor selecting exactly the pods with a metrics port, or annotations on them."""
    declared = metrics_ports(rendered)
    monitors = rendered.of_kind("PodMonitor")
    annotated = _scrape_annotations(rendered)
    discovery = rendered.values["metrics"]["discovery"]
    if not rendered.values["metrics"]["enabled"] or discovery == "none":
        assert (monitors, annotated) == ([], {})
        return
    if discovery == "podMonitor":
        assert annotated == {}
        (monitor,) = monitors
        assert monitor["apiVersion"] == f"{MONITORING_API}/v1"
        labels = monitor["metadata"]["labels"]
        assert rendered.values["metrics"]["podMonitor"]["labels"].items() <= labels.items()
        selector = monitor["spec"]["selector"]
        (expression,) = selector["matchExpressions"]
        assert expression["key"] == "app.kubernetes.io/component"
        selected = {
            d["metadata"]["name"] for d in rendered.of_kind("Deployment")
            if matches(selector["matchLabels"], d["spec"]["template"]["metadata"]["labels"])
            and d["spec"]["template"]["metadata"]["labels"][expression["key"]]
            in expression["values"]
        }
        assert selected == set(declared)
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
        assert endpoint["interval"] == rendered.values["metrics"]["podMonitor"]["interval"]
    else:  # auto, and `helm template` sees no Prometheus Operator
        assert monitors == []
        assert annotated == {
            name: {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                   "prometheus.io/path": "/metrics"}
            for name, port in declared.items()
        }


def test_auto_discovery_follows_the_clusters_apis(helm: Helm) -> None:
    def kinds_and_annotated(*api_versions: str, set_values: tuple[str, ...] = ()) -> tuple[
            list[str], int]:
        result = helm.template(api_versions=api_versions, set_values=set_values)
        assert result.returncode == 0, result.stderr
        rendered = Rendered("auto", {}, [d for d in yaml.safe_load_all(result.stdout) if d])
        return ([d["kind"] for d in rendered.of_kind("PodMonitor")],
                len(_scrape_annotations(rendered)))

    pods = len(CAIRN_SERVICES) + 1
    assert kinds_and_annotated() == ([], pods)
    with_operator = f"{MONITORING_API}/v1/PodMonitor"
    assert kinds_and_annotated(with_operator) == (["PodMonitor"], 0)
    assert kinds_and_annotated(with_operator, set_values=("metrics.discovery=annotations",)) == (
        [], pods)
    assert kinds_and_annotated(with_operator, set_values=("metrics.discovery=none",)) == ([], 0)
    assert kinds_and_annotated(with_operator, set_values=("metrics.enabled=false",)) == ([], 0)


# Values the schema (or the chart's own checks) must refuse, and the key the error must name.
# The error text differs between helm majors, so only the key is matched.
REJECTED = [
    (["services.auth.port=-1"], "port"),
    (["services.ledger.port=70000"], "port"),
    (["envoy.replicas=-1"], "replicas"),
    (["services.project.replicas=two"], "replicas"),
    (["envoy.httpPort=0"], "httpPort"),
    (["envoy.concurrency=0"], "concurrency"),
    (["envoy.service.type=Ingress"], "type"),
    (["log.level=verbose"], "level"),
    (["grpcMaxMessageBytes=-5"], "grpcMaxMessageBytes"),
    (["shutdownGraceSeconds=-1"], "shutdownGraceSeconds"),
    (["redis.persistence.size=big"], "size"),
    (["externalS3.bucket=Bad_Bucket"], "bucket"),
    (["externalRedis.url=http://redis:6379"], "url"),
    (["servces.auth.port=1"], "servces"),
    (["terminationGracePeriodSeconds=5"], "terminationGracePeriodSeconds"),
    (["terminationGracePeriodSeconds=10"], "preStopSleepSeconds + shutdownGraceSeconds"),
    (["preStopSleepSeconds=-1"], "preStopSleepSeconds"),
    (["redis.enabled=false"], "externalRedis"),
    (["minio.enabled=false"], "externalS3.endpoint"),
    (["minio.enabled=false", "externalS3.endpoint=s3:9000", "externalS3.accessKey=x"],
     "secretKey"),
    (["services.ledger.port=20051"], "port"),
    (["services.ledger.wsPort=20054"], "wsPort"),
    (["services.ledger.wsPort=0"], "wsPort"),
    (["services.ledger.metricsPort=20054"], "metricsPort"),
    (["services.auth.port=50054", "services.ledger.port=50055", "services.ledger.wsPort=50056",
      "services.auth.metricsPort=50155"], "metricsPort"),
    (["envoy.statsPort=8080"], "statsPort"),
    (["envoy.statsPort=0"], "statsPort"),
    (["metrics.discovery=serviceMonitor"], "discovery"),
    (["metrics.podMonitor.interval=soon"], "interval"),
    (["ledger.auth.mode=none"], "mode"),
    (["ledger.auth.mode=jwks"], "ledger.auth.jwksUrl"),
    (["ledger.auth.mode=es256"], "ledger.auth.publicKey"),
    (["ledger.auth.jwksUrl=ftp://keys"], "jwksUrl"),
    (["redis.enabled=false", "externalRedis.url=redis://r:6379/0",
      "externalRedis.sentinel.hosts={s:26379}"], "exactly one of"),
    (["redis.enabled=false", "externalRedis.cluster.nodes={n:7000}", "externalRedis.db=1"],
     "externalRedis.db"),
    (["externalRedis.sentinel.hosts={sentinel}"], "hosts"),
    (["externalRedis.replicaAcks=-1"], "replicaAcks"),
    (["minio.enabled=false", "externalS3.endpoint=s3:9000", "externalS3.credentials=iam",
      "externalS3.accessKey=a", "externalS3.secretKey=b"], "externalS3.credentials=iam"),
    (["externalS3.credentials=vault"], "credentials"),
    (["services.auth.autoscaling.maxReplicas=0"], "maxReplicas"),
    (["topologySpread.whenUnsatisfiable=Sometimes"], "whenUnsatisfiable"),
]


@pytest.mark.parametrize(("set_values", "named"), REJECTED, ids=[r[0][-1] for r in REJECTED])
def test_bad_values_are_rejected_naming_the_key(
    helm: Helm, set_values: list[str], named: str
) -> None:
    result = helm.template(set_values=set_values)
    assert result.returncode != 0, f"{set_values} was accepted"
    assert named in result.stderr, result.stderr


def test_the_readme_shows_the_production_values_file() -> None:
    production = values_file("production").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"```yaml\n{production}```" in readme, "README.md must show ci/production-values.yaml"


def pod_env(rendered: Rendered, deployment: str, placeholder: str = "from-a-secret"
            ) -> dict[str, str]:
    """A container's environment: the ConfigMap, then its env, Secret values as placeholders."""
    spec = rendered.get("Deployment", deployment)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", placeholder)
    return env


def test_production_settings_are_what_the_services_accept(helm: Helm) -> None:
    """Each service's settings parsers take the production values' environment as it is."""
    rendered = render(helm, "production")
    for service in CAIRN_SERVICES:
        name = f"{RELEASE}-cairn-{service}"
        env = pod_env(rendered, name)
        redis = Settings.from_env(env).redis
        assert redis.mode == "sentinel" and redis.sentinel_master == "mymaster"
        assert len(redis.sentinels) == 3 and redis.replica_acks == 1
        assert redis.password and redis.sentinel_password
        assert redis.tls_options()["ssl_ca_certs"] == "/etc/cairn/redis-ca/ca.crt"
        spec = rendered.get("Deployment", name)["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        ca_volume = volumes[mounts["/etc/cairn/redis-ca"]]
        assert ca_volume["secret"]["secretName"] == "redis-ca"
        if service in ("auth", "ledger"):
            policy = LedgerTokenPolicy.from_env(env)
            assert policy.mode == "jwks" and policy.jwks is not None
            assert policy.jwks.url == "https://login.example.com/.well-known/jwks.json"
            assert policy.audience == ("https://daml.com/jwt/aud/participant/cairn",)
            assert policy.issuer == "https://login.example.com/" and policy.leeway_seconds == 5
        if service in ("component", "ledger"):
            store = blob_store_from_env(env)
            assert isinstance(store, S3BlobStore) and store.bucket == "cairn-blobs-production"
            assert store.client._base_url.region == "eu-central-1"
            assert isinstance(store.client._provider, IamAwsProvider)
            assert "CAIRN_S3_SECRET_KEY" not in env
    account = rendered.of_kind("ServiceAccount")[0]
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]


def test_ledger_tokens_are_verified_unless_sandbox_is_chosen(pinned_helm: Helm) -> None:
    default = render(pinned_helm, "default")
    config = default.get("ConfigMap", f"{RELEASE}-cairn-config")["data"]
    assert config["CAIRN_LEDGER_AUTH"] == "hs256"
    assert default.get("Secret", f"{RELEASE}-cairn-ledger-jwt")
    installed = pinned_helm.run("install", RELEASE, str(CHART), "-n", NAMESPACE,
                                "--dry-run=client")
    assert installed.returncode == 0, installed.stderr
    assert "NOT verified" not in installed.stdout.split("NOTES:", 1)[1]
    assert f"get secret {RELEASE}-cairn-ledger-jwt" in installed.stdout
    sandbox = pinned_helm.run("install", RELEASE, str(CHART), "-n", NAMESPACE,
                              "--dry-run=client", "--set", "ledger.auth.mode=sandbox")
    assert sandbox.returncode == 0, sandbox.stderr
    notes = sandbox.stdout.split("NOTES:", 1)[1]
    assert "WARNING: ledger.auth.mode=sandbox" in notes and "NOT verified" in notes
    assert "-ledger-jwt" not in sandbox.stdout


def test_autoscaled_components_have_an_hpa_and_no_replica_count(helm: Helm) -> None:
    rendered = render(helm, "production")
    scaled = {h["spec"]["scaleTargetRef"]["name"]: h for h in
              rendered.of_kind("HorizontalPodAutoscaler")}
    assert set(scaled) == {f"{RELEASE}-cairn-{c}" for c in ("auth", "ledger", "envoy")}
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        assert ("replicas" in deployment["spec"]) == (name not in scaled), name
        if name in scaled:
            assert scaled[name]["spec"]["minReplicas"] == 2
    budgets = {b["metadata"]["name"] for b in rendered.of_kind("PodDisruptionBudget")}
    assert set(scaled) <= budgets


def test_scheduling_and_pull_secrets_apply_to_every_workload(helm: Helm) -> None:
    result = helm.template(set_values=[
        "nodeSelector.pool=cairn", "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists", "imagePullSecrets[0].name=pull",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].key=arch",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "extraVolumes[0].name=extra", "extraVolumes[0].emptyDir.medium=Memory",
        "extraVolumeMounts[0].name=extra", "extraVolumeMounts[0].mountPath=/extra",
    ])
    assert result.returncode == 0, result.stderr
    rendered = Rendered("scheduling", effective_values("default"),
                        [d for d in yaml.safe_load_all(result.stdout) if d])
    owners = set()
    for owner, spec in rendered.pod_specs():
        owners.add(owner.removeprefix(f"{RELEASE}-cairn-"))
        assert spec["nodeSelector"] == {"pool": "cairn"}, owner
        assert spec["tolerations"][0]["key"] == "dedicated", owner
        assert spec["imagePullSecrets"] == [{"name": "pull"}], owner
        assert "nodeAffinity" in spec["affinity"], owner
    assert {"redis", "minio", "test-rest", "envoy", *CAIRN_SERVICES} <= owners
    for component in ("envoy", *CAIRN_SERVICES):
        spec = rendered.get("Deployment", f"{RELEASE}-cairn-{component}")["spec"]
        (spread,) = spec["template"]["spec"]["topologySpreadConstraints"]
        assert spread["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    for service in CAIRN_SERVICES:
        spec = rendered.get("Deployment", f"{RELEASE}-cairn-{service}")["spec"]["template"]
        assert {"name": "extra", "mountPath": "/extra"} in \
            spec["spec"]["containers"][0]["volumeMounts"]
    for version in KUBE_VERSIONS:
        for doc in rendered.docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_store_credentials_can_be_pinned_or_come_from_existing_secrets(helm: Helm) -> None:
    pinned = ["redis.auth.password=red-pass", "minio.auth.rootUser=minio-user",
              "minio.auth.rootPassword=minio-pass-1234"]

    def store_secret(*set_values: str) -> dict[str, str] | None:
        result = helm.template(set_values=set_values)
        assert result.returncode == 0, result.stderr
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        found = [d for d in docs if d["kind"] == "Secret"
                 and d["metadata"]["name"] == f"{RELEASE}-cairn-store"]
        return {k: b64decode(v).decode() for k, v in found[0]["data"].items()} if found else None

    # Pinned values render the same on every render (a GitOps tool sees no change).
    assert store_secret(*pinned) == store_secret(*pinned) == {
        "redis-password": "red-pass", "s3-access-key": "minio-user",
        "s3-secret-key": "minio-pass-1234"}
    # Existing Secrets: no -store Secret; Redis, MinIO and the services read yours.
    existing = ["redis.auth.existingSecret=my-redis", "minio.auth.existingSecret=my-minio"]
    assert store_secret(*existing) is None
    result = helm.template(set_values=existing)
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    rendered = Rendered("existing", effective_values("default"), docs)
    refs = set()
    for _owner, spec in rendered.pod_specs():
        for item in spec["containers"][0].get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add((item["name"], ref["name"], ref["key"]))
    assert ("REDIS_PASSWORD", "my-redis", "redis-password") in refs
    assert ("CAIRN_REDIS_PASSWORD", "my-redis", "redis-password") in refs
    assert ("MINIO_ROOT_USER", "my-minio", "root-user") in refs
    assert ("CAIRN_S3_SECRET_KEY", "my-minio", "root-password") in refs


def test_pods_roll_when_a_secret_they_use_changes(helm: Helm) -> None:
    def checksums(*set_values: str) -> set[str]:
        result = helm.template(set_values=set_values)
        assert result.returncode == 0, result.stderr
        return {d["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
                for d in yaml.safe_load_all(result.stdout)
                if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-auth")}

    pinned = ["redis.auth.password=a", "minio.auth.rootUser=u", "minio.auth.rootPassword=p",
              "ledger.auth.existingSecret=jwt", "secrets.existingSecret=creds"]
    assert checksums(*pinned) == checksums(*pinned)
    assert checksums(*pinned) != checksums(*pinned[1:], "redis.auth.password=b")
