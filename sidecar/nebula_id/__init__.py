"""nebula-id: unique IDs from a localhost sidecar, coordinated through etcd.

The package is layered.  `nebula_id.core` is pure (bit math, state machines,
validation) and never imports aiohttp, asyncpg, kopf or an etcd client.  The
adapters (`storage`, `etcd`, `http`) wrap I/O behind the Protocols the core
declares, and `cli` wires them together.
"""

__version__ = "0.1.0"
