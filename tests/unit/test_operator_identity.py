"""Both kopf instances of the operator start under a uid without a passwd entry.

The images run as 65532, which has no passwd entry; kopf's default identity asks
`getpass.getuser()`, which then raises.  The operator gives kopf its identity.
"""

from __future__ import annotations

import asyncio
import getpass
import inspect
from typing import Any

import kopf
import pytest
from kopf._core.engines import peering

from nebula_id_operator import kube, main, webhook


def no_passwd_entry() -> str:
    raise KeyError("getpwuid(): uid not found: 65532")


def test_the_webhook_kopf_starts_without_a_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_operator(*, identity: Any = None, **kwargs: Any) -> None:
        # What kopf does first when it starts.
        seen["identity"] = identity if identity is not None else peering.detect_own_id(manual=False)

    def fake_configure(settings: kopf.OperatorSettings, *args: Any, **kwargs: Any) -> None:
        settings.admission.server = object()  # type: ignore[assignment]

    for var in ("LOGNAME", "USER", "LNAME", "USERNAME", "POD_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    monkeypatch.setattr(kopf, "operator", fake_operator)
    monkeypatch.setattr(webhook, "configure", fake_configure)
    with pytest.raises(KeyError):
        peering.detect_own_id(manual=False)  # the failure the operator must avoid
    connection = kopf.ConnectionInfo(server="https://127.0.0.1:1")
    asyncio.run(
        webhook.run(
            object(),  # type: ignore[arg-type]
            connection=connection,
            api=kube.KubeApi(connection),
            stop_flag=asyncio.Event(),
        )
    )
    assert seen["identity"]


def test_the_reconciling_kopf_is_given_the_pods_identity() -> None:
    source = inspect.getsource(main._lead)
    assert "identity=kopf_identity(settings.identity)" in source
    assert webhook.kopf_identity("pod-a") == "pod-a"
