"""Regenerates the Python code for proto/passgate/v1/*.proto (`make proto`)."""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "passgate" / "v1"


def generate(out_dir: Path) -> None:
    """Writes *_pb2.py, *_pb2_grpc.py and *_pb2.pyi for every .proto under out_dir."""
    include = Path(protoc.__file__).resolve().parent / "_proto"
    files = sorted(str(p.relative_to(ROOT)) for p in PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
        f"--mypy_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    print("generated", PROTO_DIR.relative_to(ROOT))
