"""A thin async etcd v3 client over the gRPC-JSON gateway.

etcd3-py (the usual Python choice) has had no release since 2019 and its aiohttp
backend predates etcd 3.5; the maintained gRPC clients are synchronous.  Every etcd
since 3.3 serves the same API as JSON over HTTP (`/v3/kv/range`, `/v3/lease/grant`,
`/v3/watch`, ...), so a few hundred lines over aiohttp give us what we need: async,
typed, TLS through one `ssl.SSLContext`, user/password auth, a timeout on every call,
several endpoints with failover, and our own `errors.CoordinationError` family.

The values it speaks in (`KeyValue`, `Compare`, `Put`, ...) live in `values` and are
re-exported here, so callers import this one module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence

import aiohttp

from nebula_id import errors
from nebula_id.config.etcd import EtcdSettings, parse_endpoints
from nebula_id.core import jsontypes
from nebula_id.core.access import Permission
from nebula_id.core.jsontypes import JsonObject, JsonValue
from nebula_id.etcd import values
from nebula_id.etcd.values import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Lease,
    LeaseInfo,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchEvent,
    prefix_end,
)

__all__ = [
    "Compare",
    "Delete",
    "EtcdClient",
    "EtcdRequestError",
    "EtcdSettings",
    "Get",
    "KeyValue",
    "Lease",
    "LeaseInfo",
    "LeaseNotFound",
    "Op",
    "Permission",
    "Put",
    "RangeResult",
    "TxnResult",
    "WatchCompacted",
    "WatchEvent",
    "parse_endpoints",
    "prefix_end",
]


# gRPC status codes the gateway puts in its error bodies.
GRPC_NOT_FOUND = 5
GRPC_FAILED_PRECONDITION = 9
GRPC_UNAVAILABLE = 14
GRPC_UNAUTHENTICATED = 16


class EtcdRequestError(errors.CoordinationError):
    """etcd answered, but with an error (the gRPC code and message are kept)."""

    def __init__(self, message: str, *, grpc_code: int | None = None) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code


class LeaseNotFound(EtcdRequestError):
    """The lease has expired or was revoked."""


class WatchCompacted(errors.CoordinationError):
    """A watch asked for a revision that etcd has already compacted away."""

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


# --- the client ---------------------------------------------------------------------------


class EtcdClient:
    """One connection pool to an etcd cluster.  Use as `async with EtcdClient(settings)`."""

    def __init__(self, settings: EtcdSettings) -> None:
        self._settings = settings
        self._urls = settings.urls
        self._preferred = 0
        self._ssl = settings.ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()

    @property
    def settings(self) -> EtcdSettings:
        return self._settings

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    # -- transport ----------------------------------------------------------------------

    async def _call(
        self, path: str, body: Mapping[str, JsonValue], *, call_timeout: float | None = None
    ) -> Mapping[str, object]:
        """POST to the preferred endpoint, failing over to the others on connection errors."""
        try:
            return await self._call_once(path, body, call_timeout=call_timeout)
        except EtcdRequestError as e:
            if e.grpc_code != GRPC_UNAUTHENTICATED or self._settings.username is None:
                raise
        # Simple tokens are per member and expire: authenticate again, once.
        self._token = None
        return await self._call_once(path, body, call_timeout=call_timeout)

    async def _call_once(
        self, path: str, body: Mapping[str, JsonValue], *, call_timeout: float | None
    ) -> Mapping[str, object]:
        limit = aiohttp.ClientTimeout(
            total=call_timeout or self._settings.timeout,
            sock_connect=min(
                self._settings.connect_timeout, call_timeout or self._settings.timeout
            ),
        )
        last_error: Exception | None = None
        for attempt in range(len(self._urls)):
            index = (self._preferred + attempt) % len(self._urls)
            url = self._urls[index]
            try:
                headers = await self._auth_headers(url, limit)
                async with self._get_session().post(
                    url + path, json=body, headers=headers, timeout=limit
                ) as response:
                    text = await response.text()
                    payload = _decode(text, url + path)
                    if response.status != 200 or ("code" in payload and "header" not in payload):
                        error = _request_error(payload, response.status, url + path)
                        if error.grpc_code == GRPC_UNAVAILABLE:
                            last_error = error
                            continue
                        raise error
                    self._preferred = index
                    return payload
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                last_error = e
                self._token = None if len(self._urls) > 1 else self._token
                continue
        self._preferred = (self._preferred + 1) % len(self._urls)
        if isinstance(last_error, errors.CoordinationError):
            raise last_error
        raise errors.CoordinationError(
            f"etcd unreachable at {', '.join(self._urls)}: {_describe(last_error)}"
        ) from last_error

    async def _auth_headers(self, url: str, limit: aiohttp.ClientTimeout) -> dict[str, str]:
        if self._settings.username is None:
            return {}
        async with self._auth_lock:
            if self._token is None:
                body = {"name": self._settings.username, "password": self._settings.password}
                async with self._get_session().post(
                    url + "/v3/auth/authenticate", json=body, timeout=limit
                ) as response:
                    payload = _decode(await response.text(), url)
                    if response.status != 200 or "token" not in payload:
                        raise _request_error(payload, response.status, "authenticate")
                    self._token = str(payload["token"])
            return {"Authorization": self._token}

    # -- kv ------------------------------------------------------------------------------

    async def get(self, key: str, *, call_timeout: float | None = None) -> KeyValue | None:
        result = await self.range(key, call_timeout=call_timeout)
        return result.kvs[0] if result.kvs else None

    async def range(
        self,
        key: str,
        *,
        prefix: bool = False,
        limit: int = 0,
        keys_only: bool = False,
        revision: int = 0,
        call_timeout: float | None = None,
    ) -> RangeResult:
        body = values.range_body(key, prefix=prefix)
        if limit:
            body["limit"] = str(limit)
        if keys_only:
            body["keys_only"] = True
        if revision:
            body["revision"] = str(revision)
        payload = await self._call("/v3/kv/range", body, call_timeout=call_timeout)
        kvs = tuple(values.kv_from_json(kv) for kv in jsontypes.as_objects(payload.get("kvs")))
        return RangeResult(
            kvs=kvs,
            count=jsontypes.as_int(payload.get("count")),
            revision=values.revision_of(payload),
        )

    async def put(
        self, key: str, value: bytes, *, lease: int = 0, call_timeout: float | None = None
    ) -> int:
        """Write `key`; returns the new store revision."""
        body: JsonObject = {"key": values.b64(key), "value": values.b64(value)}
        if lease:
            body["lease"] = str(lease)
        return values.revision_of(await self._call("/v3/kv/put", body, call_timeout=call_timeout))

    async def delete(
        self, key: str, *, prefix: bool = False, call_timeout: float | None = None
    ) -> int:
        """Delete `key` (or every key under it); returns how many were deleted."""
        payload = await self._call(
            "/v3/kv/deleterange", values.range_body(key, prefix=prefix), call_timeout=call_timeout
        )
        return jsontypes.as_int(payload.get("deleted"))

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        call_timeout: float | None = None,
    ) -> TxnResult:
        body: JsonObject = {
            "compare": [c.to_json() for c in compare],
            "success": [values.op_json(op) for op in success],
            "failure": [values.op_json(op) for op in failure],
        }
        payload = await self._call("/v3/kv/txn", body, call_timeout=call_timeout)
        ranges = tuple(
            tuple(values.kv_from_json(kv) for kv in jsontypes.as_objects(found.get("kvs")))
            for response in jsontypes.as_objects(payload.get("responses"))
            if (found := jsontypes.as_object(response.get("response_range"))) is not None
        )
        return TxnResult(
            succeeded=bool(payload.get("succeeded", False)),
            revision=values.revision_of(payload),
            ranges=ranges,
        )

    # -- leases ----------------------------------------------------------------------------

    async def grant(self, ttl: int, *, call_timeout: float | None = None) -> Lease:
        payload = await self._call("/v3/lease/grant", {"TTL": str(ttl)}, call_timeout=call_timeout)
        if payload.get("error"):
            raise EtcdRequestError(f"etcd refused a lease: {payload['error']}")
        return Lease(
            id=jsontypes.as_int(payload["ID"]), ttl=jsontypes.as_int(payload.get("TTL"), ttl)
        )

    async def keepalive(self, lease: int, *, call_timeout: float | None = None) -> int:
        """Renew `lease` once; returns its new TTL, or raises `LeaseNotFound` when it is gone."""
        payload = await self._call(
            "/v3/lease/keepalive", {"ID": str(lease)}, call_timeout=call_timeout
        )
        result = jsontypes.as_object(payload.get("result")) or {}
        ttl = jsontypes.as_int(result.get("TTL"))
        if ttl <= 0:
            raise LeaseNotFound(f"lease {lease:x} has expired", grpc_code=GRPC_NOT_FOUND)
        return ttl

    async def revoke(self, lease: int, *, call_timeout: float | None = None) -> bool:
        """Revoke `lease` (deleting its keys); False when it had already gone."""
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease)}, call_timeout=call_timeout)
        except LeaseNotFound:
            return False
        return True

    async def time_to_live(
        self, lease: int, *, keys: bool = False, call_timeout: float | None = None
    ) -> LeaseInfo:
        payload = await self._call(
            "/v3/lease/timetolive", {"ID": str(lease), "keys": keys}, call_timeout=call_timeout
        )
        return LeaseInfo(
            id=lease,
            # The JSON gateway omits zero fields: a missing TTL is 0 (about to
            # expire, still live); a lease that is gone reports -1 explicitly.
            ttl=jsontypes.as_int(payload.get("TTL")),
            granted_ttl=jsontypes.as_int(payload.get("grantedTTL")),
            keys=tuple(
                values.unb64(k).decode("utf-8", errors="replace")
                for k in jsontypes.as_list(payload.get("keys")) or ()
            ),
        )

    async def leases(self, *, call_timeout: float | None = None) -> list[int]:
        payload = await self._call("/v3/lease/leases", {}, call_timeout=call_timeout)
        return [
            jsontypes.as_int(item["ID"]) for item in jsontypes.as_objects(payload.get("leases"))
        ]

    # -- auth (root only) ----------------------------------------------------------------------

    async def auth_enabled(self, *, call_timeout: float | None = None) -> bool:
        payload = await self._call("/v3/auth/status", {}, call_timeout=call_timeout)
        return bool(payload.get("enabled", False))

    async def role_add(self, name: str, *, call_timeout: float | None = None) -> bool:
        """Create role `name`; False when it exists already."""
        return await self._absent_ok("/v3/auth/role/add", {"name": name}, call_timeout)

    async def role_delete(self, name: str, *, call_timeout: float | None = None) -> bool:
        """Delete role `name`; False when it did not exist."""
        return await self._absent_ok("/v3/auth/role/delete", {"role": name}, call_timeout)

    async def role_permissions(
        self, name: str, *, call_timeout: float | None = None
    ) -> tuple[Permission, ...]:
        payload = await self._call("/v3/auth/role/get", {"role": name}, call_timeout=call_timeout)
        return tuple(
            Permission(
                kind=str(perm.get("permType", "READ")),
                key=values.unb64(perm.get("key", "")).decode("utf-8", errors="replace"),
                range_end=values.unb64(perm.get("range_end", "")).decode("utf-8", errors="replace"),
            )
            for perm in jsontypes.as_objects(payload.get("perm"))
        )

    async def role_grant(
        self, name: str, permission: Permission, *, call_timeout: float | None = None
    ) -> None:
        perm: JsonObject = {"permType": permission.kind, "key": values.b64(permission.key)}
        if permission.range_end:
            perm["range_end"] = values.b64(permission.range_end)
        await self._call(
            "/v3/auth/role/grant", {"name": name, "perm": perm}, call_timeout=call_timeout
        )

    async def role_revoke(
        self, name: str, permission: Permission, *, call_timeout: float | None = None
    ) -> None:
        body: JsonObject = {"role": name, "key": values.b64(permission.key)}
        if permission.range_end:
            body["range_end"] = values.b64(permission.range_end)
        await self._call("/v3/auth/role/revoke", body, call_timeout=call_timeout)

    async def user_add(
        self, name: str, password: str, *, call_timeout: float | None = None
    ) -> bool:
        """Create user `name`; False when it exists already (its password is left alone)."""
        body = {"name": name, "password": password}
        return await self._absent_ok("/v3/auth/user/add", body, call_timeout)

    async def user_change_password(
        self, name: str, password: str, *, call_timeout: float | None = None
    ) -> None:
        await self._call(
            "/v3/auth/user/changepw",
            {"name": name, "password": password},
            call_timeout=call_timeout,
        )

    async def user_grant_role(
        self, name: str, role: str, *, call_timeout: float | None = None
    ) -> None:
        await self._call(
            "/v3/auth/user/grant", {"user": name, "role": role}, call_timeout=call_timeout
        )

    async def user_delete(self, name: str, *, call_timeout: float | None = None) -> bool:
        """Delete user `name`; False when it did not exist."""
        return await self._absent_ok("/v3/auth/user/delete", {"name": name}, call_timeout)

    async def _absent_ok(
        self, path: str, body: Mapping[str, JsonValue], call_timeout: float | None
    ) -> bool:
        """Call an auth admin endpoint; False for "already exists" / "not found"."""
        try:
            await self._call(path, body, call_timeout=call_timeout)
        except EtcdRequestError as e:
            if "already exists" in e.message or "not found" in e.message:
                return False
            raise
        return True

    # -- watch -------------------------------------------------------------------------------

    async def watch(
        self,
        key: str,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
    ) -> AsyncIterator[WatchEvent]:
        """Events on `key` (or under it) from `start_revision` on, until the stream breaks.

        A broken stream raises `errors.CoordinationError`; callers resume from the last
        revision they saw plus one.  A compacted start raises `WatchCompacted`.
        """
        request: JsonObject = values.range_body(key, prefix=prefix)
        if start_revision:
            request["start_revision"] = str(start_revision)
        if prev_kv:
            request["prev_kv"] = True
        limit = aiohttp.ClientTimeout(
            total=None, sock_connect=self._settings.connect_timeout, sock_read=None
        )
        url = self._urls[self._preferred]
        try:
            headers = await self._auth_headers(url, limit)
            async with self._get_session().post(
                url + "/v3/watch", json={"create_request": request}, headers=headers, timeout=limit
            ) as response:
                if response.status != 200:
                    text = await response.text()
                    raise _request_error(_decode(text, url), response.status, "watch")
                async for line in response.content:
                    if not line.strip():
                        continue
                    message = _decode(line.decode("utf-8"), url + "/v3/watch")
                    if "error" in message:
                        error = jsontypes.as_object(message["error"]) or {"error": message["error"]}
                        raise _request_error(error, 200, "watch")
                    result = jsontypes.as_object(message.get("result")) or {}
                    compact = jsontypes.as_int(result.get("compact_revision"))
                    if compact:
                        raise WatchCompacted(
                            f"watch of {key!r} from revision {start_revision} was compacted "
                            f"(oldest kept: {compact})",
                            compact_revision=compact,
                        )
                    if result.get("canceled"):
                        reason = result.get("cancel_reason", "canceled")
                        raise errors.CoordinationError(f"etcd canceled the watch: {reason}")
                    revision = values.revision_of(result)
                    for event in jsontypes.as_objects(result.get("events")):
                        prev = jsontypes.as_object(event.get("prev_kv"))
                        yield WatchEvent(
                            type="DELETE" if event.get("type") == "DELETE" else "PUT",
                            kv=values.kv_from_json(jsontypes.as_object(event.get("kv")) or {}),
                            prev_kv=values.kv_from_json(prev) if prev else None,
                            revision=revision,
                        )
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            self._preferred = (self._preferred + 1) % len(self._urls)
            raise errors.CoordinationError(f"etcd watch broke: {_describe(e)}") from e
        raise errors.CoordinationError("etcd closed the watch stream")


def _decode(text: str, where: str) -> Mapping[str, object]:
    try:
        payload: object = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise EtcdRequestError(f"etcd sent a non-JSON answer to {where}: {text[:200]!r}") from e
    if not isinstance(payload, dict):
        raise EtcdRequestError(f"etcd sent an unexpected answer to {where}: {text[:200]!r}")
    return payload


def _request_error(payload: Mapping[str, object], status: int, where: str) -> EtcdRequestError:
    code = payload.get("code")
    message = str(payload.get("message") or payload.get("error") or f"HTTP {status}")
    grpc_code = int(code) if isinstance(code, int | str) and str(code).isdigit() else None
    text = f"etcd refused {where}: {message}"
    if grpc_code == GRPC_NOT_FOUND and "lease" in message:
        return LeaseNotFound(text, grpc_code=grpc_code)
    if "invalid auth token" in message or "user name is empty" in message:
        grpc_code = GRPC_UNAUTHENTICATED
    return EtcdRequestError(text, grpc_code=grpc_code)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no endpoint answered"
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__
