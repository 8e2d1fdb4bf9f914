"""The one factory of pool configs for tests: a spec as the CRD spells it, parsed.

Every test pool goes through `poolspec.parse_spec`, the parser the operator and
the sidecars use, so a test never builds a config the real code would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nebula_id.core import pool as pools
from nebula_id.core import poolspec


def make_pool(
    name: str = "pool",
    *,
    namespace: str = "it",
    dc_ids: Sequence[int] = (0, 1),
    tags: Sequence[str] = ("orders",),
    step: int | None = None,
    max_step: int | None = None,
    **spec: Any,
) -> pools.PoolConfig:
    """A `PoolConfig` named `namespace/name`.

    Datacenters are ``dc-<id>`` for each of `dc_ids`, unless ``datacenters=[...]``
    is given.  Each of `tags` gets `step` and `max_step` when given, unless
    ``segment={...}`` is given.  Any other field of the spec (``algorithm``,
    ``snowflake``, ``sidecar``, ``lease``...) passes through as the CRD spells it.
    """
    settings: dict[str, int] = {}
    if step is not None:
        settings["step"] = step
    if max_step is not None:
        settings["maxStep"] = max_step
    body: dict[str, Any] = {
        "datacenters": [{"name": f"dc-{i}", "id": i} for i in dc_ids],
        "segment": {"tags": [{"name": tag, **settings} for tag in tags]},
        **spec,
    }
    return poolspec.parse_spec(body, namespace=namespace, name=name)
