"""The 2023 Template API through Envoy: the same components under `/v1/templates`, in the
Template JSON shapes (`versionedTemplateId`, `templateName.value`, externally tagged exports,
`latest` as a bare number) and the 2023 error bodies."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.component.wasm import analyse_component, metadata_to_json, template_exports_to_json

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e


@pytest.fixture
def root(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.base_url,
        headers={"Authorization": f"Bearer {stack.root_token}"},
        timeout=60,
    ) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def template_json(template_id: str, version: int, name: str, wasm: bytes, project: str) -> str:
    versioned = {"rawTemplateId": template_id, "version": version}
    metadata = analyse_component(wasm)
    return exact({
        "versionedTemplateId": versioned,
        "userTemplateId": {"versionedComponentId": versioned},
        "protectedTemplateId": {"versionedComponentId": versioned},
        "templateName": {"value": name},
        "templateSize": len(wasm),
        "metadata": {
            "exports": template_exports_to_json(metadata),
            "producers": metadata_to_json(metadata)["producers"],
        },
        "projectId": project,
    })


def test_template_flow(root: httpx.Client, shared_fixtures: Path) -> None:
    wasm_dir = shared_fixtures / "golem" / "wasm"
    cart = (wasm_dir / "wasmast_shopping-cart.wasm").read_bytes()
    project = ok(root.post("/v1/projects", json={
        "name": f"t-{uuid.uuid4().hex[:8]}", "ownerAccountId": "root", "description": "",
    }))["projectId"]
    # The documented form: a JSON part `field0` and the WASM in `template`.
    created = root.post("/v1/templates", files={
        "field0": (None, json.dumps({"projectId": project, "componentName": "cart"}),
                   "application/json"),
        "template": ("cart.wasm", cart, "application/octet-stream"),
    })
    template_id = ok(created)["versionedTemplateId"]["rawTemplateId"]
    assert created.text == template_json(template_id, 0, "cart", cart, project)
    assert list(created.json()["metadata"]["exports"][0]) == ["Instance"]

    # The Jan-2024 form, `query` + `template`, for a second template.
    echo = (wasm_dir / "rust-echo.wasm").read_bytes()
    other = ok(root.post("/v1/templates", files={
        "query": (None, json.dumps({"projectId": project, "templateName": "echo"})),
        "template": ("echo.wasm", echo),
    }))
    assert other["templateName"] == {"value": "echo"}

    listed = ok(root.get("/v1/templates", params={"project-id": project}))
    assert [t["templateName"]["value"] for t in listed] == ["cart", "echo"]
    named = ok(root.get("/v1/templates", params={"project-id": project, "template-name": "echo"}))
    assert named == [other]
    # The parameter as the 2023 documentation first spelled it.
    assert ok(root.get("/v1/templates", params={"projectId": project})) == listed

    v1_wasm = (wasm_dir / "update-test-v1.wasm").read_bytes()
    uploaded = root.put(f"/v1/templates/{template_id}/upload", content=v1_wasm,
                        headers={"Content-Type": "application/octet-stream"})
    assert uploaded.text == template_json(template_id, 1, "cart", v1_wasm, project)

    latest = root.get(f"/v1/templates/{template_id}/latest")
    assert (latest.status_code, latest.text) == (200, "1")
    versions = ok(root.get(f"/v1/templates/{template_id}"))
    assert [v["versionedTemplateId"]["version"] for v in versions] == [0, 1]
    for version, wasm in enumerate([cart, v1_wasm]):
        download = root.get(f"/v1/templates/{template_id}/download", params={"version": version})
        assert download.content == wasm
    assert root.get(f"/v1/templates/{template_id}/download").content == v1_wasm

    # The Component API sees the same component.
    component = ok(root.get(f"/v1/components/{template_id}/latest"))
    assert (component["componentName"], component["versionedComponentId"]["version"]) == (
        "cart", 1
    )


def test_template_errors_in_2023_shapes(root: httpx.Client, shared_fixtures: Path) -> None:
    missing = root.get(f"/v1/templates/{uuid.uuid4()}/latest")
    assert (missing.status_code, missing.json()) == (404, {"message": "Component not found"})
    echo = (shared_fixtures / "golem" / "wasm" / "rust-echo.wasm").read_bytes()
    name = f"dup-{uuid.uuid4().hex[:8]}"
    form: dict[str, tuple[str | None, bytes | str]] = {
        "query": (None, json.dumps({"componentName": name})), "template": ("e.wasm", echo),
    }
    first = ok(root.post("/v1/templates", files=form))
    again = root.post("/v1/templates", files=form)
    assert (again.status_code, again.json()) == (
        409, {"component_id": first["versionedTemplateId"]["rawTemplateId"]}
    )
    bad = root.post("/v1/templates", files={
        "query": (None, json.dumps({"componentName": "bad"})),
        "template": ("bad.wasm", b"not wasm"),
    })
    assert bad.status_code == 400 and bad.json()["errors"][0].startswith("Parsing error")
