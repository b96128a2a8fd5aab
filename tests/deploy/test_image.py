"""The image recipe agrees with the chart that runs it (no docker daemon here to build it).

The user, ports, paths and commands the chart relies on are the ones deploy/docker/Dockerfile
sets up, and everything it copies is in the build context. Whether what it installs is enough to
run every service is test_chart_stack.py's job: it carries out the build stage (`dockerfile.py`)
and starts every pod from the result.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from cairn.runtime.settings import DEFAULT_PORTS, Settings
from cairn.stack.launcher import REPO_ROOT

from .conftest import CHART, RELEASE, Helm, render
from .dockerfile import in_build_context, instructions


def final_stage(keyword: str) -> list[str]:
    return [args for k, args in instructions(-1) if k == keyword]


def test_base_image_is_python_311_slim() -> None:
    (arg,) = [a for k, a in instructions() if k == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", arg)


def test_runs_as_the_non_root_user_the_chart_expects() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = values["podSecurityContext"]
    assert final_stage("USER") == [f"{pod['runAsUser']}:{pod['runAsGroup']}"]
    assert pod["runAsUser"] != 0


def test_exposes_the_default_ports_of_every_component() -> None:
    (exposed,) = final_stage("EXPOSE")
    defaults = Settings()
    expected = {defaults.http_port, *DEFAULT_PORTS.values()}  # admin: loopback only
    assert {int(p) for p in exposed.split()} == expected


def test_environment_matches_the_chart_volumes_and_settings(helm: Helm) -> None:
    (env_line,) = final_stage("ENV")
    env = dict(item.split("=", 1) for item in env_line.split())
    rendered = render(helm, "default")
    config = rendered.get("ConfigMap", f"{RELEASE}-cairn-config")["data"]
    assert env["CAIRN_RUN_DIR"] == config["CAIRN_RUN_DIR"]
    assert env["CAIRN_BIND_HOST"] == config["CAIRN_BIND_HOST"]
    # Bytecode cannot be written on the read-only root file system; it is compiled at build time.
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    for owner, spec in rendered.pod_specs():
        if owner.endswith(("-redis", "-minio", "-test-rest")):
            continue
        mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert config["CAIRN_RUN_DIR"] in mounts, owner


def test_commands_the_chart_runs_exist(helm: Helm) -> None:
    rendered = render(helm, "default")
    modules = {"cairn.stack"}  # the image's default command: the whole stack
    for _owner, spec in rendered.pod_specs():
        command = spec["containers"][0].get("command", [])
        if command[:2] == ["python", "-m"]:
            modules.add(command[2])
    assert modules == {"cairn.stack", "cairn.stack.edge", "cairn.auth", "cairn.project",
                       "cairn.component", "cairn.ledger"}
    for module in modules:
        found = importlib.util.find_spec(module)
        assert found is not None, module
        if found.submodule_search_locations is not None:  # a package runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, module
    assert final_stage("CMD") == ['["python", "-m", "cairn.stack"]']


def test_generates_protos_at_build_time_with_the_stack_extra() -> None:
    runs = " ".join(args for k, args in instructions(0) if k == "RUN")
    assert "'.[stack]'" in runs
    assert "scripts/gen_protos.py" in runs


def test_everything_copied_is_in_the_build_context() -> None:
    copied = [source for k, args in instructions(0) if k == "COPY"
              for source in args.split()[:-1] if not source.startswith("--")]
    assert copied
    for source in copied:
        assert (REPO_ROOT / source).exists(), source
        assert in_build_context(source), f"{source} is excluded from the build context"
    # Local state must stay out of the image.
    for local in (".venv", ".run", ".tools", ".git", "build/cairn.binpb"):
        assert not in_build_context(local), local
    assert Path(REPO_ROOT / "scripts" / "gen_protos.py").is_file()
