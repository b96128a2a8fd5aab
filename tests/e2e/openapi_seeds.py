"""Realistic inputs for the schemathesis runs: real ids in the live stack, real WASM uploads.

Generated path and query values rarely name anything that exists, so most calls would only
exercise the 404 paths. `Seeds.apply` puts ids of things made in the stack into most cases (the
choice is derived from the case itself, so Hypothesis can replay it) and a real component binary
into most uploads.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from schemathesis import Case

# A DAML sandbox token for Alice (the JSON API documentation's example), for the ledger paths.
ALICE_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJodHRwczovL2RhbWwuY29tL2xlZGdlci1hcGkiOnsibGVkZ2Vy"
    "SWQiOiJNeUxlZGdlciIsImFwcGxpY2F0aW9uSWQiOiJIVFRQLUpTT04tQVBJLUdhdGV3YXkiLCJhY3RBcyI6WyJBbG"
    "ljZSJdfX0.34zzF_fbWv7p60r5s1kKzwndvGdsJDX-W4Xhm4oVdpk"
)
LEDGER_PREFIXES = ("/v1/create", "/v1/exercise", "/v1/fetch", "/v1/query", "/v1/parties",
                   "/v1/packages")
SEEDED_SHARE = 0.8


@dataclass
class Seeds:
    root_token: str
    wasm: bytes
    # calls made per status code, reported at the end of the module (docs/openapi.md's numbers)
    statuses: dict[int, int] = field(default_factory=dict)
    # path or query parameter name -> values that name something in the stack
    values: dict[str, list[str]] = field(default_factory=dict)
    # the same, for names that mean different things under different paths
    plugin_values: dict[str, list[str]] = field(default_factory=dict)

    def headers(self, case: Case) -> dict[str, str]:
        token = ALICE_JWT if case.path.startswith(LEDGER_PREFIXES) else self.root_token
        return {"Authorization": f"Bearer {token}"}

    def apply(self, case: Case) -> None:
        rng = random.Random(f"{case.method} {case.path} {case.path_parameters} {case.query}")
        on_plugins = case.path.startswith("/v1/plugins")
        for params in (case.path_parameters, case.query):
            if not params:
                continue
            for name in list(params):
                table = self.plugin_values if on_plugins else self.values
                choices = table.get(name)
                if choices and rng.random() < SEEDED_SHARE:
                    params[name] = rng.choice(choices)
        body = case.body
        if case.media_type == "multipart/form-data" and isinstance(body, dict):
            if rng.random() < SEEDED_SHARE:
                body["component"] = self.wasm
                if isinstance(body.get("query"), dict):
                    unique = uuid.UUID(int=rng.getrandbits(128))
                    body["query"]["componentName"] = f"st-{unique}"
                    body["query"].pop("projectId", None)
        elif (
            case.media_type == "application/octet-stream"
            and "/components/" in case.path
            and rng.random() < SEEDED_SHARE
        ):
            case.body = self.wasm


def count(seeds: Seeds, status: int) -> None:
    seeds.statuses[status] = seeds.statuses.get(status, 0) + 1


# Printed in pytest's terminal summary (tests/e2e/conftest.py): the numbers docs/openapi.md quotes.
SUMMARIES: list[str] = []


def summary(title: str, seeds: Seeds) -> None:
    by_status = ", ".join(f"{s}: {n}" for s, n in sorted(seeds.statuses.items()))
    SUMMARIES.append(f"{title}: {sum(seeds.statuses.values())} calls ({by_status})")


def make_seeds(base_url: str, root_token: str, wasm_path: Path) -> Seeds:
    """Creates what the seeded ids name: an account with a token, a project with a grant and a
    policy, a component with a plugin installed, a project-level installation."""
    wasm = wasm_path.read_bytes()
    with httpx.Client(base_url=base_url, timeout=60,
                      headers={"Authorization": f"Bearer {root_token}"}) as root:

        def ok(reply: httpx.Response) -> Any:
            assert reply.status_code == 200, (reply.request.url, reply.text)
            return reply.json()

        account = ok(root.post("/v1/accounts", json={"name": "seed", "email": "s@example.com"}))
        token = ok(root.post(f"/v1/accounts/{account['id']}/tokens", json={}))
        project = ok(root.post("/v1/projects", json={
            "name": "seeded", "ownerAccountId": "root", "description": "schemathesis"}))
        pid = project["projectId"]
        grant = ok(root.post(f"/v1/projects/{pid}/grants", json={
            "granteeAccountId": account["id"], "projectActions": ["ViewComponent"]}))
        name = f"seed-{uuid.uuid4().hex[:8]}"
        component = ok(root.post("/v1/components", data={
            "query": f'{{"projectId":"{pid}","componentName":"{name}"}}'},
            files={"component": ("c.wasm", wasm, "application/octet-stream")}))
        cid = component["versionedComponentId"]["componentId"]
        ok(root.post("/v1/plugins", json={
            "name": "seed-plugin", "version": "1", "description": "", "icon": [],
            "homepage": "", "scope": {"type": "Global"},
            "specs": {"type": "ComponentTransformer", "validateUrl": "v", "transformUrl": "t"}}))
        installation = {"name": "seed-plugin", "version": "1", "priority": 1, "parameters": {}}
        on_component = ok(root.post(f"/v1/components/{cid}/latest/plugins/installs",
                                    json=installation))
        on_project = ok(root.post(f"/v1/projects/{pid}/plugins/installs", json=installation))
    return Seeds(
        root_token=root_token,
        wasm=wasm,
        values={
            "account_id": ["root", account["id"]],
            "account-id": ["root", account["id"]],
            "token_id": [token["data"]["id"]],
            "role": ["Admin", "MarketingAdmin", "CreateProject"],
            "project_id": [pid],
            "project-id": [pid],
            "grant_id": [grant["id"]],
            "project_policy_id": [grant["data"]["projectPolicyId"]],
            "component_id": [cid],
            "component-name": [name],
            "version": ["0", "1", "latest"],
            "installation_id": [on_component["id"], on_project["id"]],
        },
        plugin_values={
            "name": ["seed-plugin"],
            "version": ["1"],
            "scope": ["global", f"project:{pid}", f"component:{cid}"],
        },
    )
