"""Tiny blocking HTTP probes for readiness checks, never through a proxy."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 2.0,
) -> tuple[int, bytes]:
    """GET `url`; returns (status, body), or (0, b"") when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    opener = _NO_PROXY
    if context is not None:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())
    except (OSError, urllib.error.URLError):
        return 0, b""
