"""Drain Envoy before it stops, so calls in flight finish and clients reconnect elsewhere.

Envoy exits at once on SIGTERM, dropping what is in flight. Draining first makes it report 503 on
`/ready` (`POST /healthcheck/fail`; draining alone leaves `/ready` LIVE) and answer
`Connection: close` on HTTP/1.1 and send GOAWAY on HTTP/2 (`POST /drain_listeners?graceful`),
while it still serves every request it has. `make run` drains
before stopping the stack (launcher.Stack.stop); the Helm chart's Envoy runs
`python -m cairn.stack.drain` as its preStop hook, which drains and then waits out the preStop
time so that the pod leaves the Service's endpoints before SIGTERM.

| variable | default | meaning |
|---|---|---|
| `CAIRN_ENVOY_ADMIN_HOST`, `_PORT` | `127.0.0.1`, `9901` | Envoy's admin interface |
| `CAIRN_ENVOY_DRAIN_SECONDS` | `5` | how long the preStop hook drains before Envoy gets SIGTERM |
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Sequence

from cairn.runtime.settings import Settings

# The listener's requests in flight, and those of them that are upgraded (WebSocket) streams.
_ACTIVE = "http.cairn.downstream_rq_active"
_UPGRADES = "http.cairn.downstream_cx_upgrades_active"


def envoy_drain_argv(seconds: float) -> list[str]:
    """Envoy flags for draining: every connection is asked to close at once (not spread over the
    drain time), and the listeners close after `seconds`."""
    return ["--drain-strategy", "immediate", "--drain-time-s", str(max(1, round(seconds)))]


def start_draining(admin_url: str) -> None:
    """Ask Envoy to report not ready and drain its listeners; raises OSError when its admin does
    not answer."""
    for path in ("/healthcheck/fail", "/drain_listeners?graceful"):
        request = urllib.request.Request(f"{admin_url}{path}", method="POST")
        urllib.request.urlopen(request, timeout=2).close()


def active_requests(admin_url: str) -> int:
    """Requests in flight through the listener, not counting upgraded (WebSocket) streams, which
    end when their service closes them."""
    stats_filter = f"^({_ACTIVE}|{_UPGRADES})$".replace(".", "[.]")
    try:
        with urllib.request.urlopen(
            f"{admin_url}/stats?format=json&filter={stats_filter}", timeout=1
        ) as reply:
            stats = {s["name"]: s.get("value", 0) for s in json.load(reply)["stats"]}
    except (OSError, ValueError, KeyError):
        return 0
    return int(stats.get(_ACTIVE, 0)) - int(stats.get(_UPGRADES, 0))


def drain(admin_url: str, seconds: float, *, until_idle: bool) -> None:
    """Drain, then wait `seconds`, or (`until_idle`) only until no request is in flight."""
    start_draining(admin_url)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if until_idle and active_requests(admin_url) <= 0:
            return
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    settings = Settings.from_env()
    admin_url = f"http://{settings.envoy_admin_host}:{settings.envoy_admin_port}"
    try:
        drain(admin_url, settings.envoy_drain_seconds, until_idle=False)
    except OSError as err:
        print(f"cairn: could not drain Envoy at {admin_url}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
