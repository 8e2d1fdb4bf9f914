"""The `nebula-id` command: serve, parse, version, pool and operator.

Heavy imports (aiohttp, the operator) happen inside the subcommand that needs
them, so `nebula-id serve` starts fast and `nebula-id parse` is instant.
Failures that a user can fix (a bad setting, a locked data dir) print one
line naming the problem and exit with status 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from nebula_id import __version__, errors, logs
from nebula_id.config import serve as serve_settings

EXIT_CONFIG = 2

log = logging.getLogger("nebula_id")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nebula-id", description="Unique IDs (Snowflake, Segment, UUIDv7, UUIDv4)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # No abbreviations: `--auth-api-keys KEY` must fail, not become `--auth-api-keys-file`.
    serve = subparsers.add_parser(
        "serve", help="run the sidecar (standalone without etcd)", allow_abbrev=False
    )
    serve_settings.add_arguments(serve)
    serve.set_defaults(run=run_serve)

    parse = subparsers.add_parser("parse", help="decode a Snowflake ID")
    parse.add_argument("id", help="decimal Snowflake ID")
    parse.add_argument("--config", default=None, help="TOML config with a [snowflake] section")
    for name in (
        "snowflake_epoch",
        "snowflake_timestamp_bits",
        "snowflake_datacenter_bits",
        "snowflake_worker_bits",
        "snowflake_sequence_bits",
    ):
        parse.add_argument("--" + name.replace("_", "-"), dest=name, default=None)
    parse.set_defaults(run=run_parse)

    version = subparsers.add_parser("version", help="print the version")
    version.set_defaults(run=run_version)

    _register_optional(subparsers)
    return parser


def _register_optional(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pool` (nebula_id.poolcli) and `operator` (nebula_id_operator.cli) register themselves.

    Both imports are light: etcd, kopf and the operator load only when their
    subcommand runs.
    """
    from nebula_id import poolcli
    from nebula_id_operator import cli as operator_cli

    poolcli.add_parser(subparsers)
    operator_cli.add_parser(subparsers)


def run_serve(args: argparse.Namespace) -> int:
    settings = serve_settings.load(args)
    logs.configure(settings.log.level, settings.log.format, pool=settings.pool, stream=sys.stderr)
    http = settings.http
    from nebula_id.http import app as app_mod
    from nebula_id.http import listen, server

    app = app_mod.build_app(settings)
    context = app_mod.ssl_context(http)
    if context is not None:
        from nebula_id.http import reload

        app.cleanup_ctx.append(reload.watching_ctx([reload.certificate(http, context)]))
    scheme = "https" if context else "http"
    mode = "cluster" if settings.cluster_mode else f"standalone, data dir {settings.data_dir}"
    loop = listen.new_event_loop()
    unix = listen.unix_listener(http.unix_socket) if http.unix_socket else None
    log.info(
        "nebula-id %s starting on %s://%s:%d%s%s (%s, %s)",
        __version__,
        scheme,
        http.host,
        http.port,
        f" and unix:{http.unix_socket}" if unix else "",
        f", gRPC on port {http.grpc_port}" if http.grpc_port is not None else "",
        mode,
        listen.loop_name(loop),
    )
    try:
        server.run(
            app,
            host=http.host,
            port=http.port,
            sock=unix,
            ssl_context=context,
            shutdown_timeout=5.0,
            loop=loop,
        )
    except OSError as e:
        # Binding is the only OS call the runner makes itself; adapters map their own.
        raise errors.ConfigError(
            f"cannot listen on {http.host}:{http.port}: {e.strerror or e}"
        ) from e
    finally:
        if http.unix_socket:
            listen.remove_socket(http.unix_socket)
    return 0


def run_parse(args: argparse.Namespace) -> int:
    layout = serve_settings.load(args).snowflake.layout()
    parsed = layout.parse_text(args.id)
    from nebula_id.core import layout as layouts

    print(
        json.dumps(
            {
                "id": str(parsed.id),
                "timestamp_ms": parsed.timestamp_ms,
                "timestamp": layouts.format_epoch(parsed.timestamp_ms),
                "datacenter": parsed.datacenter,
                "worker": parsed.worker,
                "sequence": parsed.sequence,
            },
            indent=2,
        )
    )
    return 0


def run_version(args: argparse.Namespace) -> int:
    print(f"nebula-id {__version__}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except errors.NebulaIdError as e:
        print(f"nebula-id: error: {e.message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
