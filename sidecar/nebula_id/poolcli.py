"""`nebula-id pool apply|get|delete|import`: pools for users with etcd but without Kubernetes.

It reads the same YAML as the `NebulaIdPool` custom resource, validates it with the
same code (`core.poolspec.parse_spec`) and writes it with the same writer as the operator
(`etcd.pools.apply`), so a pool applied here behaves exactly like one reconciled there.
`apply` also provisions the segment tables in the databases it is given (PostgreSQL
or MySQL/MariaDB, as each DSN's scheme says); `import` (in `pool_import`) raises the
segment floors above the IDs of the system being replaced.

Exit codes: 0 done, 1 no such pool, 2 invalid pool or refused change (the message says
why), 3 try again later: etcd or a database could not be reached (`errors.Unavailable`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

import yaml

from nebula_id import errors
from nebula_id.config import poolcmd
from nebula_id.core import jsontypes, poolspec
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as pool_store

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `pool` and its subcommands on the `nebula-id` parser."""
    pool = subparsers.add_parser(
        "pool",
        help="apply, get, delete or import into a pool in etcd (no Kubernetes needed)",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    pool.set_defaults(run=run)
    actions = pool.add_subparsers(dest="pool_command", required=True, metavar="ACTION")

    apply = actions.add_parser("apply", help="validate a NebulaIdPool YAML and write it to etcd")
    apply.add_argument("-f", "--filename", required=True, help="pool YAML, or - for stdin")
    apply.add_argument("--dry-run", action="store_true", help="validate only; write nothing")
    apply.add_argument(
        "--database-url",
        default=None,
        help="DSN of --datacenter's segment database, provisioned on apply "
        "(env NEBULA_DATABASE_URL)",
    )
    apply.add_argument(
        "--database-urls",
        default=None,
        help="dc-a=DSN,dc-b=DSN: segment databases to provision (env NEBULA_DATABASE_URLS)",
    )
    apply.add_argument(
        "--datacenter",
        default=None,
        help="the datacenter --database-url belongs to (env NEBULA_DATACENTER; "
        "default: the pool's only datacenter)",
    )

    get = actions.add_parser("get", help="print a pool's stored config")
    get.add_argument("name")
    get.add_argument("-o", "--output", choices=("json", "yaml"), default="json")

    delete = actions.add_parser(
        "delete", help="delete a pool's config and worker claims (high-water marks stay)"
    )
    delete.add_argument("name")

    from nebula_id import pool_import  # it builds on this module's helpers

    imported = actions.add_parser(
        "import",
        help="raise segment floors above the IDs of Leaf, a sequence or an AUTO_INCREMENT",
        description=pool_import.__doc__.split("\n\n", 1)[0] if pool_import.__doc__ else None,
    )
    pool_import.add_arguments(imported)

    for action in (apply, get, delete, imported):
        action.add_argument(
            "-n",
            "--namespace",
            default=None,
            help="namespace of the pool (default: the YAML's, else 'default')",
        )
        poolcmd.add_etcd_arguments(action)


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a `pool` subcommand; returns the exit code."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        return asyncio.run(_dispatch(args, stdout))
    except errors.NebulaIdError as e:
        print(f"nebula-id pool: {e.message}", file=stderr)
        return exit_code(e)


def exit_code(error: errors.NebulaIdError) -> int:
    """The exit code of a failure, from its class: "try again later" is 3."""
    if isinstance(error, errors.NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, errors.Unavailable):
        return EXIT_UNAVAILABLE
    return EXIT_INVALID


async def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    command: str = args.pool_command
    if command == "import":
        from nebula_id import pool_import

        return await pool_import.run(args, out)
    if command == "apply":
        documents = _read_documents(args.filename)
        settings = etcd_settings_of(args) if not args.dry_run else None
        for doc in documents:
            await _apply_one(args, doc, settings, out)
        return EXIT_OK
    namespace = args.namespace or "default"
    keys = pool_keys.PoolKeys(namespace, args.name, prefix=prefix_of(args))
    async with etcd.EtcdClient(etcd_settings_of(args)) as client:
        if command == "get":
            stored = await pool_store.get(client, keys)
            if stored is None:
                raise errors.NotFound(f"pool {namespace}/{args.name} not found in etcd")
            doc = stored.config.to_json()
            if args.output == "yaml":
                out.write(yaml.safe_dump(doc, sort_keys=False))
            else:
                out.write(json.dumps(doc, indent=2) + "\n")
            return EXIT_OK
        result = await pool_store.delete(client, keys)
    if not result.config_deleted and not result.claims_deleted:
        raise errors.NotFound(f"pool {namespace}/{args.name} not found in etcd")
    print(
        f"pool {namespace}/{args.name} deleted ({result.claims_deleted} worker claims removed; "
        "high-water marks kept)",
        file=out,
    )
    return EXIT_OK


async def _apply_one(
    args: argparse.Namespace,
    doc: Mapping[str, object],
    settings: etcd.EtcdSettings | None,
    out: TextIO,
) -> None:
    namespace, name, spec = poolspec.parse_document(
        doc, default_namespace=args.namespace or "default"
    )
    metadata = jsontypes.as_object(doc.get("metadata")) or {}
    if args.namespace and metadata.get("namespace") not in (None, args.namespace):
        raise errors.InvalidPool(
            f"the YAML says namespace {namespace!r} but -n says {args.namespace!r}"
        )
    keys = pool_keys.PoolKeys(namespace, name, prefix=prefix_of(args))
    now_ms = time.time_ns() // 1_000_000
    if settings is None:
        config = poolspec.parse_spec(spec, namespace=namespace, name=name, now_ms=now_ms)
        print(
            f"pool {config.ref} is valid ({_datacenters(config)}; dry run, nothing written)",
            file=out,
        )
        return
    async with etcd.EtcdClient(settings) as client:
        try:
            result = await pool_store.apply(client, keys, spec, now_ms=now_ms)
        except errors.InvalidPool as e:
            raise errors.InvalidPool(f"pool {namespace}/{name} refused: {e.message}") from e
    verb = "created" if result.created else "configured" if result.changed else "unchanged"
    print(f"pool {result.config.ref} {verb} ({_datacenters(result.config)})", file=out)
    for dc_name, dsn in dsns_of(args, result.config).items():
        await _provision(dsn, result.config, result.config.datacenter(dc_name), out)


async def _provision(
    dsn: str, config: pools.PoolConfig, datacenter: pools.Datacenter, out: TextIO
) -> None:
    from nebula_id.storage import engines  # database drivers only when a database is given

    done = await engines.provision(dsn, config, datacenter)
    created = ", ".join(done.created_tags) or "none"
    print(
        f"segment tables in datacenter {datacenter.name}: tags created: {created}; "
        f"already there: {', '.join(done.existing_tags) or 'none'}",
        file=out,
    )
    for warning in done.warnings:
        print(f"WARNING: datacenter {datacenter.name}: {warning}", file=out)


def _datacenters(config: pools.PoolConfig) -> str:
    listed = ", ".join(f"{dc.name}={dc.id}" for dc in config.datacenters)
    return f"datacenters {listed}; {config.layout.worker_capacity} worker IDs each"


def _read_documents(filename: str) -> list[Mapping[str, object]]:
    try:
        text = sys.stdin.read() if filename == "-" else open(filename, encoding="utf-8").read()  # noqa: SIM115
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as e:
        raise errors.ConfigError(f"cannot read {filename}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise errors.InvalidPool(f"{filename} is not valid YAML: {e}") from e
    if not docs:
        raise errors.InvalidPool(f"{filename} holds no pool")
    for doc in docs:
        if not isinstance(doc, Mapping):
            raise errors.InvalidPool(f"{filename}: a pool document must be a mapping")
    return docs


def prefix_of(args: argparse.Namespace) -> str:
    return poolcmd.load(args).prefix


def etcd_settings_of(args: argparse.Namespace) -> etcd.EtcdSettings:
    return poolcmd.load(args).require_etcd()


def dsns_of(args: argparse.Namespace, config: pools.PoolConfig) -> dict[str, str]:
    """Datacenter name -> DSN of the segment databases to provision."""
    settings = poolcmd.load_provisioning(args)
    found = dict(settings.database.urls)
    if settings.database.url:
        own = settings.datacenter
        if own is None:
            if len(config.datacenters) != 1:
                raise errors.ConfigError(
                    "--database-url needs --datacenter (or NEBULA_DATACENTER): the pool has "
                    f"{len(config.datacenters)} datacenters"
                )
            own = config.datacenters[0].name
        found[own] = settings.database.url
    for name in found:
        config.datacenter(name)  # raises, naming the pool's datacenters
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pool` on its own (the `nebula-id` command registers it too)."""
    parser = argparse.ArgumentParser(prog="nebula-id")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
