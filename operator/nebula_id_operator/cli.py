"""`nebula-id operator`: the subcommand the main CLI (`nebula_id.cli`) registers.

The import stays light (no kopf) so `nebula-id serve` starts fast; kopf and the
operator are imported only when this subcommand runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from nebula_id import errors, logs
from nebula_id_operator import settings as operator_settings


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator",
        help="run the NebulaIdPool operator (kopf), with leader election through etcd",
        description="Reconcile NebulaIdPool resources: see README.md, section Operator.",
    )
    operator_settings.add_arguments(parser)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("NEBULA_LOG_LEVEL", "info").lower(),
        choices=["debug", "info", "warning", "error"],
        help="(env NEBULA_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("NEBULA_LOG_FORMAT", "text").lower(),
        choices=list(logs.FORMATS),
        help="text, or one JSON object per line (env NEBULA_LOG_FORMAT)",
    )
    parser.set_defaults(run=run)
    return parser


# The top-level modules the `operator` extra brings (pyproject.toml).
OPERATOR_EXTRA = frozenset({"kopf", "kubernetes", "cryptography"})


def run(args: argparse.Namespace) -> int:
    try:
        from nebula_id_operator import main  # kopf is heavy: only here
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in OPERATOR_EXTRA:
            raise
        print(
            f"nebula-id operator: {e.name} is not installed; "
            "install the operator extra: pip install 'nebula-id[operator]'",
            file=sys.stderr,
        )
        return 2
    try:
        logs.configure(str(args.log_level), str(args.log_format))
    except ValueError as e:  # NEBULA_LOG_FORMAT is not checked by argparse's choices
        print(f"nebula-id operator: NEBULA_LOG_FORMAT: {e}", file=sys.stderr)
        return 2
    if args.log_level != "debug":
        # kopf logs every timer run at INFO; our own modules say what matters.
        logging.getLogger("kopf").setLevel(logging.WARNING)
    try:
        settings = operator_settings.load(args)
    except errors.ConfigError as e:
        logging.getLogger("nebula_id_operator").error("%s", e.message)
        return 2
    import asyncio

    return asyncio.run(main.run(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nebula-id")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser(subparsers)
    args = parser.parse_args(["operator", *(argv or [])] if argv is not None else None)
    return run(args)
