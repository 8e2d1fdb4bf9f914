"""What the asyncio and the threaded client share: the batch request, the buffer, the answers.

Both clients keep IDs in a deque and fetch `pipeline` batches of ``?count=batch_size``
per round trip once fewer than ``low_water * batch_size`` remain.  They differ only
in how they wait and fetch (a task, or a thread); the arguments, the request, the
reading of answers into batches and the client's state live here once.
"""

from __future__ import annotations

import collections
import urllib.parse
from collections.abc import Iterable
from typing import Final

from nebula_id import errors
from nebula_id.client import answers, wire

Id = int | str
"""An int for Snowflake and Segment, the canonical lowercase string for UUIDs."""

DEFAULT_BASE_URL: Final = "http://127.0.0.1:8080"
BINARY: Final = "application/octet-stream"
UNIX_SCHEME: Final = "unix://"
UNIX_HOST_URL: Final = "http://localhost"
NUMERIC: Final = frozenset({"snowflake", "segment"})
STRINGS: Final = frozenset({"uuid7", "uuid4"})
QUIET_AFTER_FAILURE = 1.0  # seconds without background fetches after one failed

Batches = list[list[int] | list[str]]


def split_base_url(base_url: str, unix_socket: str | None) -> tuple[str, str | None]:
    """(HTTP base URL, Unix socket path or None) from ``http://host:port`` or ``unix:///path``.

    Over a socket the HTTP requests still need a host for their URL and
    ``Host`` header; ``localhost`` is what the sidecar gets.
    """
    if base_url.startswith(UNIX_SCHEME):
        path = base_url[len(UNIX_SCHEME) :]
        if not path.startswith("/") or (unix_socket is not None and unix_socket != path):
            raise errors.InvalidArgument(
                f"base_url {base_url!r} must be unix:///absolute/path "
                "(and agree with unix_socket= when both are given)"
            )
        return UNIX_HOST_URL, path
    if unix_socket is not None:
        return UNIX_HOST_URL if base_url == DEFAULT_BASE_URL else base_url.rstrip("/"), unix_socket
    return base_url.rstrip("/"), None


class ClientClosed(errors.NebulaIdError):
    """The client was closed; it issues nothing more."""

    code = "client_closed"


class Prefetching:
    """The state of a buffered client: its batch request, its buffer and low mark."""

    def __init__(
        self,
        base_url: str,
        *,
        algorithm: str,
        batch_size: int,
        low_water: float,
        api_key: str | None,
        timeout: float,
        unix_socket: str | None,
        pipeline: int,
    ) -> None:
        name, _, tag = algorithm.partition("/")
        if name not in NUMERIC | STRINGS or (tag and name != "segment") or algorithm == "segment/":
            raise errors.InvalidArgument(
                f"algorithm must be snowflake, segment, segment/<tag>, uuid7 or uuid4, "
                f"got {algorithm!r}"
            )
        if batch_size < 1:
            raise errors.InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= low_water <= 1.0:
            raise errors.InvalidArgument(f"low_water must be from 0 to 1, got {low_water}")
        if timeout <= 0:
            raise errors.InvalidArgument(f"timeout must be positive, got {timeout}")
        if not 1 <= pipeline <= 8:
            raise errors.InvalidArgument(f"pipeline must be from 1 to 8, got {pipeline}")
        self.base_url, self.unix_socket = split_base_url(base_url, unix_socket)
        self.algorithm = algorithm
        self.batch_size = batch_size
        self._tag = tag or None
        self._numeric = name in NUMERIC
        path = name + ("/" + urllib.parse.quote(tag, safe="") if tag else "")
        self._path_qs = f"/v1/ids/{path}?count={batch_size}"
        # 64-bit IDs come as big-endian int64s: a tenth of the JSON's decoding cost.
        self._headers = {"Accept": BINARY if self._numeric else "application/json"}
        if api_key is not None:
            self._headers["X-API-Key"] = api_key
        try:
            self._target = wire.Target.of(self.base_url, self.unix_socket)
        except ValueError as e:
            raise errors.InvalidArgument(str(e)) from e
        self._pipeline = pipeline
        self._buffer: collections.deque[Id] = collections.deque()
        # Above the low mark a pop leaves at least the mark: no check is needed.
        self._low_mark = int(batch_size * low_water)
        self._quiet_until = 0.0
        self._closed = False
        self.requests = 0
        """Fetches so far (answered or not); each asks for `pipeline` batches."""

    @property
    def buffered(self) -> int:
        """IDs held locally right now."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def where(self) -> str:
        """The sidecar's address, for messages: its URL or ``unix:<path>``."""
        return f"unix:{self.unix_socket}" if self.unix_socket else self.base_url

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed(f"the {self.algorithm} client is closed")

    def _unreachable(self, error: BaseException) -> answers.SidecarUnreachable:
        return answers.SidecarUnreachable(
            f"cannot reach the nebula-id sidecar at {self.where}: "
            f"{type(error).__name__}: {error}".rstrip(": ")
        )

    def _read_batches(
        self, found: Iterable[wire.Answer], into: Batches
    ) -> errors.NebulaIdError | None:
        """The answers of one round trip, in order, appended to `into` as batches of IDs.

        Stops at a refused answer and returns its error (the batches before it were
        issued for this client, so it uses them); a malformed answer raises.
        """
        for answer in found:
            if answer.status != 200:
                return answers.error_from(
                    answer.status,
                    answer.body,
                    retry_after=answer.headers.get("retry-after"),
                    tag=self._tag,
                )
            if answer.content_type == BINARY:
                into.append(answers.ids_from_binary(answer.body))
            else:
                into.append(answers.ids_from(answer.body, numeric=self._numeric))
        return None
