"""Generate the Python gRPC stubs and Envoy's descriptor set from proto/.

Stubs go next to the hand-written code (services/cairn/<svc>/v1/, git-ignored) so that the proto
package `cairn.<svc>.v1` is the Python package of the same name. The descriptor set includes every
import, which the grpc_json_transcoder needs.
"""

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services"
DESCRIPTOR = ROOT / "build" / "cairn.binpb"


def _plugin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (mypy-protobuf)")
    return found


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    # googleapis-common-protos ships google/api/*.proto; grpc_tools ships the well-known types.
    googleapis = Path(str(resources.files("google.api"))).parent.parent
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    DESCRIPTOR.parent.mkdir(parents=True, exist_ok=True)
    for pkg_dir in {(OUT_DIR / p).parent for p in protos}:
        pkg_dir.mkdir(parents=True, exist_ok=True)
        (pkg_dir / "__init__.py").touch()
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        # Typed stubs for the grpc modules (sync and asyncio), from mypy-protobuf.
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_grpc_out={OUT_DIR}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={DESCRIPTOR}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return int(code)
    _add_error_details(DESCRIPTOR)
    return 0


def _add_error_details(descriptor_set: Path) -> None:
    """Services send google.rpc.ErrorInfo/BadRequest/RequestInfo in grpc-status-details-bin; the
    transcoder (convert_grpc_status) can print them only if their types are in its descriptor set.
    """
    from google.protobuf import descriptor_pb2, duration_pb2
    from google.rpc import error_details_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    present = {f.name for f in files.file}
    for module in (duration_pb2, error_details_pb2):  # dependencies first
        if module.DESCRIPTOR.name not in present:
            module.DESCRIPTOR.CopyToProto(files.file.add())
    descriptor_set.write_bytes(files.SerializeToString())


if __name__ == "__main__":
    sys.exit(main())
