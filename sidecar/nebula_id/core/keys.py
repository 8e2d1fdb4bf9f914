"""The etcd keyspace of DESIGN.md, in one place.

{prefix}/pools/{ns}/{name}/config                 written by the operator or `pool apply`
{prefix}/pools/{ns}/{name}/identity               layout, epoch, datacenter IDs and generation;
                                                  kept after deletion until the data is dropped
{prefix}/pools/{ns}/{name}/health                 written by the operator
{prefix}/pools/{ns}/{name}/workers/{dc}/{worker}  a claim, attached to the holder's lease
{prefix}/pools/{ns}/{name}/clock/{dc}/{worker}    the high-water mark, kept without a lease
{prefix}/pools/{ns}/{name}/floors/{dc}/{tag}      a segment floor: the highest ID any range of
                                                  (tag, dc) may have handed out, kept apart
                                                  from the database row as a second witness
"""

from __future__ import annotations

import dataclasses

from nebula_id import errors

DEFAULT_PREFIX = "/nebula-id"


def parse_pool_ref(text: str) -> tuple[str, str]:
    """``namespace/name`` as a pair; a bare name means the ``default`` namespace."""
    parts = text.strip().split("/")
    if len(parts) == 1 and parts[0]:
        return "default", parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise errors.ConfigError(f"pool {text!r} must be written as namespace/name")


@dataclasses.dataclass(frozen=True, slots=True)
class PoolKeys:
    """Key builders for one pool."""

    namespace: str
    name: str
    prefix: str = DEFAULT_PREFIX

    @property
    def root(self) -> str:
        return f"{self.prefix.rstrip('/')}/pools/{self.namespace}/{self.name}"

    @property
    def config(self) -> str:
        return f"{self.root}/config"

    @property
    def identity(self) -> str:
        return f"{self.root}/identity"

    @property
    def health(self) -> str:
        return f"{self.root}/health"

    @property
    def workers_prefix(self) -> str:
        return f"{self.root}/workers/"

    def workers_of(self, datacenter: int) -> str:
        return f"{self.root}/workers/{datacenter}/"

    def worker(self, datacenter: int, worker: int) -> str:
        return f"{self.root}/workers/{datacenter}/{worker}"

    @property
    def clock_prefix(self) -> str:
        return f"{self.root}/clock/"

    def clock(self, datacenter: int, worker: int) -> str:
        return f"{self.root}/clock/{datacenter}/{worker}"

    @property
    def floors_prefix(self) -> str:
        return f"{self.root}/floors/"

    def floor(self, datacenter: int, tag: str) -> str:
        return f"{self.root}/floors/{datacenter}/{tag}"
