"""Generates the Python gRPC stubs for Keel's API from proto/ into keel_pb/ (git-ignored).

Run it with a Python that has grpcio-tools (requirements.txt):  python gen.py
Afterwards, with keel_pb/ on sys.path:  from keel.v1 import producer_pb2, producer_pb2_grpc
"""

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
# The import root of the .proto files: they import each other as "keel/v1/errors.proto", so
# protoc must see them under that path, and the generated modules then import each other as
# `from keel.v1 import errors_pb2`.
PROTO_ROOT = HERE.parent.parent / "proto" / "proto"
OUT = HERE / "keel_pb"


def main() -> None:
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "keel" / "v1").glob("*.proto"))
    if not protos:
        sys.exit(f"gen.py: no .proto files under {PROTO_ROOT}")
    # Generate next to the final folder and swap it in, so a failed run leaves no half set.
    tmp = OUT.with_name(OUT.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",  # type stubs, for editors
            f"--grpc_python_out={tmp}",
            *protos,
        ]
    )
    if rc != 0:
        sys.exit(f"gen.py: protoc failed (exit {rc})")
    # Regular packages rather than namespace packages, so that `keel.v1` resolves to exactly
    # these files.
    for pkg in ("keel", "keel/v1"):
        (tmp / pkg / "__init__.py").touch()
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    print(f"gen.py: {len(protos)} protos -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
