"""Generate the gRPC modules from ``ids.proto``, beside it.

The generated ``ids_pb2.py``, ``ids_pb2.pyi`` and ``ids_pb2_grpc.py`` are never
committed (``.gitignore``): the build (``setup.py``'s ``build_py``, so also
``pip install -e .`` and wheels) and ``scripts/test.sh`` run this.  It needs
only the standard library and grpcio-tools, so the build can load it by path
before the package is importable.

    python sidecar/nebula_id/rpc/codegen.py [--check]
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_ROOT = HERE.parent.parent  # the folder that holds the nebula_id package
PROTO = HERE / "ids.proto"
OUTPUTS = ("ids_pb2.py", "ids_pb2.pyi", "ids_pb2_grpc.py")


def up_to_date() -> bool:
    built = [HERE / name for name in OUTPUTS]
    newest_input = max(PROTO.stat().st_mtime, pathlib.Path(__file__).stat().st_mtime)
    return all(p.exists() and p.stat().st_mtime >= newest_input for p in built)


def generate(*, force: bool = False) -> list[pathlib.Path]:
    """Run protoc (grpcio-tools) unless the outputs are newer than the .proto."""
    if not force and up_to_date():
        return [HERE / name for name in OUTPUTS]
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as e:
        raise SystemExit(
            "generating the gRPC code needs grpcio-tools: pip install grpcio-tools "
            f"(or 'nebula-id[grpc]'): {e}"
        ) from e
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    relative = PROTO.relative_to(SOURCE_ROOT)
    argv = [
        "grpc_tools.protoc",
        f"-I{SOURCE_ROOT}",
        f"-I{well_known}",
        f"--python_out={SOURCE_ROOT}",
        f"--pyi_out={SOURCE_ROOT}",
        f"--grpc_python_out={SOURCE_ROOT}",
        str(relative),
    ]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    return [HERE / name for name in OUTPUTS]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        return 0 if up_to_date() else 1
    for path in generate(force="--force" in argv):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
