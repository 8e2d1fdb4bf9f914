"""`nebula-id pool import`: continue above the IDs of the generator being replaced.

It reads how far the old system went (Leaf's ``leaf_alloc`` rows, or a sequence
or AUTO_INCREMENT plus a safety margin) and raises each tag's floor so that every
Segment ID any datacenter of the pool issues from then on is above it.  A
datacenter issues ``base + counter`` (``base = dc_id << (63 - datacenterBits)``),
so the counter each datacenter needs is its own: `core.segment.counter_above`.

The floors go to every datacenter's database row and to etcd (`etcd.floors`).
Everything is planned and checked before anything is written: a tag that is not
the pool's, a datacenter without a database URL, or a datacenter whose slice
ends below the old IDs refuses the whole import.  Floors only rise, so running
it again is harmless and prints "unchanged".
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, TextIO

from nebula_id import errors, poolcli
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.core import segment
from nebula_id.etcd import client as etcd
from nebula_id.etcd import floors
from nebula_id.etcd import pools as pool_store

if TYPE_CHECKING:
    from nebula_id.storage import engines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `import` action's own flags (poolcli adds the etcd and -n flags)."""
    parser.add_argument("name", help="the pool (already applied) whose floors to raise")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-leaf",
        metavar="DSN",
        help="Leaf's database (mysql://… or postgresql://…); reads its leaf_alloc rows",
    )
    source.add_argument(
        "--from-sequence",
        metavar="DSN",
        help="a database with a PostgreSQL sequence or a MySQL AUTO_INCREMENT (with --sequence)",
    )
    parser.add_argument(
        "--leaf-table", default="leaf_alloc", help="Leaf's table (default leaf_alloc)"
    )
    parser.add_argument(
        "--sequence",
        metavar="NAME",
        help="PostgreSQL: the sequence ([schema.]name); MySQL: the table with AUTO_INCREMENT",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=None,
        help="--from-sequence: the pool's tag to raise (required); --from-leaf: import only "
        "this biz_tag (repeatable; default every row)",
    )
    parser.add_argument(
        "--margin",
        type=int,
        default=None,
        help="added to the old value, for IDs issued after it was read "
        "(required with --from-sequence; default 0 with --from-leaf)",
    )
    parser.add_argument(
        "--database-url", default=None, help="DSN of --datacenter's segment database"
    )
    parser.add_argument(
        "--database-urls",
        default=None,
        help="dc-a=DSN,dc-b=DSN: every datacenter's segment database (env NEBULA_DATABASE_URLS)",
    )
    parser.add_argument("--datacenter", default=None, help="the datacenter of --database-url")
    parser.add_argument("--dry-run", action="store_true", help="read and plan; write nothing")


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One (tag, datacenter) floor to raise: IDs from then on are above `old_max`."""

    tag: str
    datacenter: pools.Datacenter
    old_max: int
    counter: int
    """The row's counter must be at least this (the next ID is ``base + counter``)."""
    base: int


async def read_old_maxima(args: argparse.Namespace, out: TextIO) -> dict[str, int]:
    """Tag -> the highest ID the old system may have issued, margin included."""
    from nebula_id.storage import legacy  # database drivers only when needed

    margin = args.margin
    if margin is not None and margin < 0:
        raise errors.InvalidArgument(f"--margin must not be negative, got {margin}")
    redact = _redact
    if args.from_leaf:
        rows = await legacy.read_leaf(args.from_leaf, table=args.leaf_table)
        wanted = set(args.tag or ())
        found = {r.biz_tag for r in rows}
        missing = sorted(wanted - found)
        if missing:
            raise errors.NotFound(f"Leaf has no biz_tag {', '.join(missing)}")
        chosen = [r for r in rows if not wanted or r.biz_tag in wanted]
        print(
            f"Leaf at {redact(args.from_leaf)}: {len(rows)} tags in {args.leaf_table}, "
            f"importing {len(chosen)}",
            file=out,
        )
        return {r.biz_tag: r.max_id + (margin or 0) for r in chosen}
    if not args.sequence or not args.tag or len(args.tag) != 1 or margin is None:
        raise errors.InvalidArgument(
            "--from-sequence needs --sequence NAME, exactly one --tag and --margin N"
        )
    value = await legacy.read_sequence(args.from_sequence, args.sequence)
    print(
        f"sequence {args.sequence} at {redact(args.from_sequence)}: at {value}, "
        f"plus margin {margin}",
        file=out,
    )
    return {args.tag[0]: value + margin}


def plan(config: pools.PoolConfig, maxima: dict[str, int], dsns: dict[str, str]) -> list[Step]:
    """Every (tag, datacenter) floor, or `InvalidPool` naming everything that is wrong."""
    problems: list[str] = []
    unknown = sorted(t for t in maxima if all(t != tag.name for tag in config.tags))
    if unknown:
        problems.append(
            f"tags {', '.join(unknown)} are not tags of pool {config.ref} (add them to "
            "spec.segment.tags and apply the pool first, or choose tags with --tag)"
        )
    missing = [dc.name for dc in config.datacenters if dc.name not in dsns]
    if missing:
        problems.append(
            f"no database URL for datacenters {', '.join(missing)}: the floor must hold in "
            "every datacenter (pass --database-urls dc=DSN,...)"
        )
    bits = config.layout.datacenter_bits
    steps: list[Step] = []
    for tag_name, old_max in sorted(maxima.items()):
        if tag_name in unknown:
            continue
        tag = config.tag(tag_name)
        for dc in config.datacenters:
            try:
                counter = segment.counter_above(old_max, dc.id, bits)
            except errors.InvalidPool as e:
                problems.append(f"tag {tag_name}, datacenter {dc.name}: {e.message}")
                continue
            room = segment.counter_limit(bits) - counter
            if room < tag.step:
                problems.append(
                    f"tag {tag_name}, datacenter {dc.name}: above {old_max} its slice has "
                    f"{room} IDs left, less than one step ({tag.step})"
                )
                continue
            base = segment.datacenter_base(dc.id, bits)
            steps.append(Step(tag_name, dc, old_max, counter, base))
    if problems:
        raise errors.InvalidPool("import refused, nothing written: " + "; ".join(problems))
    return steps


async def run(args: argparse.Namespace, out: TextIO) -> int:
    """Plan, then raise every floor in the databases and in etcd; prints each step."""
    from nebula_id.storage import engines  # database drivers only when needed

    namespace = args.namespace or "default"
    keys = pool_keys.PoolKeys(namespace, args.name, prefix=poolcli.prefix_of(args))
    async with etcd.EtcdClient(poolcli.etcd_settings_of(args)) as client:
        stored = await pool_store.get(client, keys)
        if stored is None:
            raise errors.NotFound(
                f"pool {namespace}/{args.name} not found in etcd (apply it first)"
            )
        config = stored.config
        dsns = poolcli.dsns_of(args, config)
        maxima = await read_old_maxima(args, out)
        steps = plan(config, maxima, dsns)
        for tag_name, old_max in sorted(maxima.items()):
            print(f"tag {tag_name}: old IDs end at {old_max}; new IDs will be above it", file=out)
        if args.dry_run:
            for step in steps:
                print(
                    f"  {step.datacenter.name} (id {step.datacenter.id}): counter to at least "
                    f"{step.counter} (next ID {step.base + step.counter}); dry run",
                    file=out,
                )
            return poolcli.EXIT_OK
        by_dc: dict[str, list[Step]] = {}
        for step in steps:
            by_dc.setdefault(step.datacenter.name, []).append(step)
        for dc in config.datacenters:
            if dc.name not in by_dc:
                continue
            store = engines.open_store(dsns[dc.name], pool=config, datacenter=dc)
            try:
                for step in by_dc[dc.name]:
                    await _raise(store, client, keys, step, out)
            finally:
                await store.close()
    return poolcli.EXIT_OK


async def _raise(
    store: engines.SegmentDatabase,
    client: etcd.EtcdClient,
    keys: pool_keys.PoolKeys,
    step: Step,
    out: TextIO,
) -> None:
    # Two witnesses of how far the counter went (the row and the etcd floor): the row
    # goes to the higher of the floor and the import's counter, then etcd to the row's.
    floor = await floors.read_floor(client, keys, step.datacenter.id, step.tag)
    before, after = await store.raise_floor(step.tag, max(step.counter, floor or 0))
    witnessed = await floors.raise_floor(client, keys, step.datacenter.id, step.tag, after)
    dc = f"{step.datacenter.name} (id {step.datacenter.id})"
    if after > before:
        verb = f"raised counter {before} -> {after}"
    elif step.counter == 0:
        verb = f"unchanged: its slice starts at {step.base}, above the old IDs"
    else:
        verb = f"unchanged: counter {before} is already at or above {step.counter} (never lowered)"
    print(
        f"  tag {step.tag} in {dc}: {verb}; next ID >= {step.base + after}; etcd floor {witnessed}",
        file=out,
    )


def _redact(dsn: str) -> str:
    from nebula_id.storage import postgres

    return postgres.where(dsn)
