"""The sidecar's answers, read back: a batch of IDs, or our own error.

This is the inverse of `nebula_id.http.errors`: a JSON error
``{"error": {"code", "reason", "message"}}`` becomes the `nebula_id.errors`
type the sidecar mapped to it (a 503 by its reason), so an application
handles the same exceptions whether it generates in process or over HTTP.
Pure: bytes in, values or exceptions out, no I/O.
"""

from __future__ import annotations

import array
import json
import re
import sys
from typing import Any

from nebula_id import errors

_BY_CODE: dict[str, type[errors.NebulaIdError]] = {
    "invalid_argument": errors.InvalidArgument,
    "method_not_allowed": errors.InvalidArgument,
    "unauthorized": errors.Unauthorized,
    "not_found": errors.NotFound,
}
_BY_STATUS = {400: "invalid_argument", 401: "unauthorized", 404: "not_found", 429: "rate_limited"}
_UNAVAILABLE: dict[str, type[errors.Unavailable]] = {
    "lease_lost": errors.LeaseLost,
    "worker_ids_exhausted": errors.WorkerIdsExhausted,
    "segments_exhausted": errors.SegmentExhausted,
    "not_ready": errors.NotReady,
}
_BEHIND = re.compile(r"moved back (\d+) ms")
_UNKNOWN_TAG = re.compile(r"^unknown segment tag '([^']*)'; known tags: (.*)$")


class SidecarUnreachable(errors.NotReady):
    """No answer from the sidecar: refused, reset or timed out.  Nothing was issued."""


class BadAnswer(errors.NebulaIdError):
    """A 200 answer that is not a batch of IDs (a proxy, or not a nebula-id sidecar)."""

    code = "bad_answer"


def ids_from(body: bytes, *, numeric: bool) -> list[int] | list[str]:
    """The IDs of a ``{"ids": [...]}`` answer: ints for 64-bit IDs, strs for UUIDs."""
    try:
        values = json.loads(body)["ids"]
        if not isinstance(values, list):
            raise TypeError(f"ids is a {type(values).__name__}")
        if numeric:
            return list(map(int, values))
        if not all(isinstance(v, str) for v in values):
            raise TypeError("an ID is not a string")
        return values
    except (ValueError, TypeError, KeyError) as e:
        raise BadAnswer(f"the answer is not a batch of IDs ({e}): {_snippet(body)}") from e


def ids_from_binary(body: bytes) -> list[int]:
    """The IDs of an ``application/octet-stream`` batch: big-endian int64s."""
    if len(body) % 8:
        raise BadAnswer(f"a binary batch of {len(body)} bytes is not a whole number of IDs")
    values = array.array("q", body)
    if sys.byteorder == "little":
        values.byteswap()
    return values.tolist()


def error_from(
    status: int, body: bytes, *, retry_after: str | None, tag: str | None = None
) -> errors.NebulaIdError:
    """The exception for a non-200 answer.  `tag`: the segment tag that was asked for."""
    code, reason, message = _error_fields(status, body)
    wait = _seconds(retry_after)
    if code == "rate_limited":
        return errors.RateLimited(message, retry_after=wait)
    if code == "unavailable":
        if reason == "clock_moved_backward":
            behind = _BEHIND.search(message)
            return errors.ClockMovedBackward(
                message, behind_ms=int(behind[1]) if behind else 0, retry_after=wait
            )
        return _UNAVAILABLE.get(reason, errors.Unavailable)(message, retry_after=wait)
    if code == "not_found" and tag is not None:
        unknown = _UNKNOWN_TAG.match(message)
        if unknown and unknown[1] == tag:
            listed = unknown[2]
            known = [] if listed == "none configured" else listed.split(", ")
            return errors.UnknownTag(tag, known)
    kind = _BY_CODE.get(code)
    if kind is not None:
        return kind(message)
    return errors.NebulaIdError(f"the sidecar answered {status}: {message}")


def _error_fields(status: int, body: bytes) -> tuple[str, str, str]:
    """(code, reason, message) from our JSON error, or made up from the status."""
    try:
        error: Any = json.loads(body)["error"]
        code, reason, message = error["code"], error["reason"], error["message"]
        if all(isinstance(v, str) for v in (code, reason, message)):
            return code, reason, message
    except (ValueError, TypeError, KeyError):
        pass
    code = _BY_STATUS.get(status, "unavailable" if status == 503 else "internal")
    reason = "not_ready" if code == "unavailable" else code
    return code, reason, f"HTTP {status}: {_snippet(body)}"


def _seconds(retry_after: str | None) -> float:
    try:
        return max(float(retry_after), 0.0) if retry_after else 1.0
    except ValueError:
        return 1.0  # an HTTP date: not something the sidecar sends


def _snippet(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").strip()
    return repr(text + ("..." if len(body) > 200 else ""))
