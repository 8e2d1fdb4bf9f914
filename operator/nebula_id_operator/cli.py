"""`nebula-id operator`: the subcommand the main CLI (`nebula_id.cli`) registers.

The import stays light (no kopf) so `nebula-id serve` starts fast; kopf and the
operator are imported only when this subcommand runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from nebula_id import errors, logs
from nebula_id.config import operator as operator_settings


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "operator",
        help="run the NebulaIdPool operator (kopf), with leader election through etcd",
        description="Reconcile NebulaIdPool resources: see README.md, section Operator.",
    )
    operator_settings.add_arguments(parser)
    parser.set_defaults(run=run)
    return parser


# The top-level modules the `operator` extra brings (pyproject.toml).
OPERATOR_EXTRA = frozenset({"kopf", "cryptography"})


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
        settings = operator_settings.load(args)
    except errors.ConfigError as e:
        print(f"nebula-id operator: {e.message}", file=sys.stderr)
        return 2
    logs.configure(settings.log.level, settings.log.format)
    if settings.log.level != "debug":
        # kopf logs every timer run at INFO; our own modules say what matters.
        logging.getLogger("kopf").setLevel(logging.WARNING)
    import asyncio

    return asyncio.run(main.run(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nebula-id")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser(subparsers)
    args = parser.parse_args(["operator", *(argv or [])] if argv is not None else None)
    return run(args)
