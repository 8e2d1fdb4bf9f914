"""Build hook: generate the gRPC modules from the .proto before the sources are collected.

Everything else about the package is in pyproject.toml.  The generated files
are not committed; `build_py` (which wheels and editable installs both run)
makes them with grpcio-tools, a build requirement.  See
sidecar/nebula_id/rpc/codegen.py.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py

CODEGEN = pathlib.Path(__file__).resolve().parent / "sidecar" / "nebula_id" / "rpc" / "codegen.py"


def _generate() -> None:
    spec = importlib.util.spec_from_file_location("nebula_id_rpc_codegen", CODEGEN)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {CODEGEN}")
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate()


class BuildPyWithGrpc(build_py):
    """`build_py` that first generates ids_pb2*.py beside ids.proto."""

    def run(self) -> None:
        _generate()
        super().run()


setup(cmdclass={"build_py": BuildPyWithGrpc})
