"""The Python client of the sidecar: buffered IDs for an asyncio application.

    from nebula_id.client import IdClient

    async with IdClient("http://127.0.0.1:8080", algorithm="snowflake") as ids:
        order_id = await ids.next_id()

`buffered` holds the asyncio client and `threaded` the one for threads
(`SyncIdClient`), both over the same prefetch state (`prefetch`); `wire` is
their HTTP/1.1 connection, and `answers` reads the sidecar's answers back into
IDs or `nebula_id.errors` exceptions.
"""

from nebula_id.client.answers import BadAnswer, SidecarUnreachable
from nebula_id.client.buffered import BufferEmpty, IdClient
from nebula_id.client.prefetch import ClientClosed, Id
from nebula_id.client.threaded import SyncIdClient

__all__ = [
    "BadAnswer",
    "BufferEmpty",
    "ClientClosed",
    "Id",
    "IdClient",
    "SidecarUnreachable",
    "SyncIdClient",
]
