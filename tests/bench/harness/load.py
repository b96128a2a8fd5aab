"""Load generators in their own processes: wrk (HTTP/1.1) and h2load (HTTP/2, native gRPC).

Both are Debian packages (`wrk`, `nghttp2-client`); `make bench` installs them when missing. Each
run is bounded: wrk by its duration, h2load by its duration or request count. Latency is what the
tool measured per request: wrk's histogram (from writing the request to reading the whole
response), h2load's per-request log (`--log-file`, from stream start to end of response).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

# wrk prints this from its `done` hook; latency values are microseconds.
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,'
    .. '"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


class LoadError(RuntimeError):
    """A load run failed or saw failed requests."""


@dataclass(frozen=True)
class Measurement:
    """One load run: latency in milliseconds, throughput in requests per second."""

    tool: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def require_tools() -> None:
    missing = [t for t in ("wrk", "h2load") if shutil.which(t) is None]
    if missing:
        raise LoadError(f"missing {', '.join(missing)}: `make bench` installs them "
                        "(apt-get install wrk nghttp2-client)")


def wrk(url: str, *, connections: int, seconds: float, script: str = "",
        timeout_s: float = 10.0) -> Measurement:
    """Run wrk with one thread; `script` is Lua setting wrk.method/body/headers or request()."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script + _WRK_DONE)
    try:
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                f"--timeout={int(timeout_s)}s", "-s", lua.name, url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        Path(lua.name).unlink()
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stdout[-800:]}{done.stderr[-800:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    if data["errors"] or data["status_errors"]:
        raise LoadError(f"wrk {url}: {data['errors']} socket errors, "
                        f"{data['status_errors']} non-2xx/3xx responses")
    ms = 1000.0
    return Measurement("wrk", connections, data["requests"], data["duration_us"] / 1e6,
                       data["p50"] / ms, data["p90"] / ms, data["p99"] / ms, data["max"] / ms,
                       data["mean"] / ms)


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def from_samples(tool: str, connections: int, seconds: float,
                 latencies_ms: list[float]) -> Measurement:
    ordered = sorted(latencies_ms)
    if not ordered:
        raise LoadError(f"{tool}: no samples")
    return Measurement(tool, connections, len(ordered), seconds, _percentile(ordered, 0.5),
                       _percentile(ordered, 0.9), _percentile(ordered, 0.99), ordered[-1],
                       sum(ordered) / len(ordered))


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def h2load_grpc(url: str, message: bytes, *, connections: int, seconds: float,
                headers: dict[str, str] | None = None) -> Measurement:
    """Unary gRPC calls over HTTP/2 (prior knowledge), one stream at a time per connection.

    h2load checks only the HTTP status; callers check the gRPC status of the same call once
    beforehand (grpc-status arrives in trailers, which h2load does not read).
    """
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(grpc_frame(message))
        log = Path(tmp) / "log"
        argv = ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{max(1, round(seconds))}",
                "--warm-up-time=1", f"--log-file={log}", "-d", str(body),
                "-H", "content-type: application/grpc", "-H", "te: trailers"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        done = subprocess.run([*argv, url], capture_output=True, text=True,
                              timeout=seconds + 60)
        if done.returncode != 0:
            raise LoadError(f"h2load failed ({done.returncode}): "
                            f"{done.stdout[-800:]}{done.stderr[-800:]}")
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    bad = sum(1 for row in rows if row[1] != "200")
    if bad or not rows or "0 failed" not in done.stdout:
        raise LoadError(f"h2load {url}: {bad} non-200 responses\n{done.stdout[-800:]}")
    starts = [int(row[0]) for row in rows]
    ends = [int(row[0]) + int(row[2]) for row in rows]
    seconds_measured = (max(ends) - min(starts)) / 1e6
    return from_samples("h2load", connections, seconds_measured, [int(r[2]) / 1000 for r in rows])
