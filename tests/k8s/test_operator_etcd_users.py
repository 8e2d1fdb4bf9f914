"""The operator hands each pool its own etcd user, against a real etcd with auth on.

The operator logs in to etcd as root; for every pool it creates an etcd user and
role limited to that pool's keys and writes the credential to the Secret
``nebula-id-etcd-<pool>`` in the pool's namespace.  The credential found there
reads its own pool's config and nothing else, and deleting the pool removes it.
"""

from __future__ import annotations

import asyncio
import base64
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from nebula_id.core import access
from nebula_id.core import keys as pool_keys
from nebula_id.etcd import client as etcd
from tests.k8s import operator_helpers as helpers
from tests.support.controlplane import ControlPlane

NAMESPACE = "etcd-users-tests"
PREFIX = "/nebula-id-etcd-users"
ROOT_PASSWORD = "operator-root-pw"


async def _enable_auth(endpoint: str) -> None:
    async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(endpoint,))) as c:
        await c.user_add("root", ROOT_PASSWORD)
        await c.user_grant_role("root", "root")
        await c._call("/v3/auth/enable", {})


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.support import binaries
    from tests.support.etcd import EtcdServer

    server = EtcdServer(binaries.bin_dir(), tmp_path_factory.mktemp("etcd-auth"))
    server.start()
    try:
        asyncio.run(_enable_auth(server.endpoint))
        yield server.endpoint
    finally:
        server.close()


operator = helpers.module_operator(
    namespace=NAMESPACE,
    prefix=PREFIX,
    identity="users",
    etcd_fixture="auth_etcd",
    extra_env={
        "NEBULA_ETCD_USERNAME": "root",
        "NEBULA_ETCD_PASSWORD": ROOT_PASSWORD,
        "NEBULA_OPERATOR_ETCD_POOL_USERS": "true",
    },
)


def apply_pool(plane: ControlPlane, name: str) -> None:
    manifest = textwrap.dedent(
        f"""\
        apiVersion: nebula-id.io/v1alpha1
        kind: NebulaIdPool
        metadata: {{name: {name}, namespace: {NAMESPACE}}}
        spec:
          datacenters: [{{name: dc-a, id: 1}}]
        """
    )
    helpers.apply(plane, manifest)


def credential(plane: ControlPlane, pool: str) -> tuple[str, str] | None:
    found = helpers.get_json(plane, "secret", access.secret_name(pool), "-n", NAMESPACE)
    if not found:
        return None
    data = found["data"]
    return (
        base64.b64decode(data["username"]).decode(),
        base64.b64decode(data["password"]).decode(),
    )


async def _probe(endpoint: str, user: str, password: str, mine: str, other: str) -> list[str]:
    """What the credential may do: a list of outcomes, one per attempt."""
    settings = etcd.EtcdSettings(endpoints=(endpoint,), username=user, password=password)
    outcomes = []
    async with etcd.EtcdClient(settings) as c:
        kv = await c.get(pool_keys.PoolKeys(NAMESPACE, mine, PREFIX).config)
        outcomes.append("own config" if kv is not None else "own config missing")
        for key in (
            pool_keys.PoolKeys(NAMESPACE, other, PREFIX).config,
            f"{PREFIX}/operator/leader",
        ):
            try:
                await c.get(key)
                outcomes.append(f"read {key}")
            except etcd.EtcdRequestError as e:
                outcomes.append("denied" if "permission denied" in e.message else e.message)
    return outcomes


async def _logs_in(endpoint: str, user: str, password: str) -> bool:
    settings = etcd.EtcdSettings(endpoints=(endpoint,), username=user, password=password)
    async with etcd.EtcdClient(settings) as c:
        try:
            await c.get(f"{PREFIX}/anything")
        except etcd.EtcdRequestError as e:
            return "authentication failed" not in e.message
    return True


def test_each_pool_gets_an_etcd_user_limited_to_its_keys(
    control_plane: ControlPlane, operator: helpers.Operator, auth_etcd: str, tmp_path: Path
) -> None:
    apply_pool(control_plane, "alpha")
    apply_pool(control_plane, "beta")
    for name in ("alpha", "beta"):
        found = helpers.eventually(
            lambda name=name: (
                helpers.condition(
                    helpers.get_json(control_plane, "nip", name, "-n", NAMESPACE), "EtcdConfigured"
                ).get("status")
                == "True"
            ),
            timeout=30,
            what=f"{name} EtcdConfigured\n{operator.log_tail()}",
        )
        assert found
    alpha = helpers.eventually(
        lambda: credential(control_plane, "alpha"), timeout=10, what="alpha's Secret"
    )
    user, password = alpha
    assert user == access.principal(pool_keys.PoolKeys(NAMESPACE, "alpha", PREFIX))
    assert len(password) >= 32
    secret = helpers.get_json(control_plane, "secret", access.secret_name("alpha"), "-n", NAMESPACE)
    owners = secret["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"]) for o in owners] == [("NebulaIdPool", "alpha")]

    outcomes = asyncio.run(_probe(auth_etcd, user, password, "alpha", "beta"))
    assert outcomes == ["own config", "denied", "denied"]

    control_plane.kubectl("delete", "nip", "alpha", "-n", NAMESPACE, "--timeout=60s")
    helpers.eventually(
        lambda: not asyncio.run(_logs_in(auth_etcd, user, password)),
        timeout=30,
        what="alpha's etcd user to be deleted",
    )
    # Beta's credential still works.
    beta = credential(control_plane, "beta")
    assert beta is not None
    assert asyncio.run(_logs_in(auth_etcd, *beta))
