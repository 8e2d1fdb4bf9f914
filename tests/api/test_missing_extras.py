"""Without an optional extra, its subcommand or flag says which extra to install.

`nebula-id operator` needs the `operator` extra (kopf) and `--grpc-port` the
`grpc` extra (grpcio, protobuf).  Each test runs the CLI in a child Python in
which those packages cannot be imported (`sys.modules[name] = None` makes any
import of them raise ModuleNotFoundError), and checks for one line naming the
extra, a non-zero exit, and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_without(blocked: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    program = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from nebula_id import cli\n"
        f"sys.exit(cli.main({argv!r}))\n"
    )
    path = os.pathsep.join(str(ROOT / p) for p in ("sidecar", "operator"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env["PYTHONPATH"] = path
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_operator_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    result = run_without(["kopf"], ["operator"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'nebula-id[operator]'" in lines[0]
    assert "kopf" in lines[0]


def test_grpc_port_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    argv = [
        "serve",
        "--port",
        str(free_port()),
        "--grpc-port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    result = run_without(["grpc"], argv, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert "pip install 'nebula-id[grpc]'" in errors[0]
    assert "--grpc-port" in errors[0]
