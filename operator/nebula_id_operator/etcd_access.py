"""Each pool's own etcd credential: an etcd user and role, and a Secret beside the pool.

With ``NEBULA_OPERATOR_ETCD_POOL_USERS`` on, the operator (logged in to etcd
as a user with the root role) gives every pool an etcd user that may touch only
that pool's keys (`nebula_id.core.access`), and writes its user name and
password to the Secret ``nebula-id-etcd-{pool}`` in the pool's namespace.  The
injection mounts that Secret into the pool's sidecars, so a sidecar of one
namespace cannot read or change another namespace's pool, nor the leader key.

The Secret is the source of truth for the password: it is created once with a
random password (owned by the pool, so Kubernetes deletes it with the pool), and
the etcd user is set to whatever it holds.  Deleting the Secret by hand rotates
the password on the next reconcile (running sidecars log in again on restart).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import kopf

from nebula_id.core import access, crd
from nebula_id.core import keys as pool_keys
from nebula_id.etcd import client as etcd
from nebula_id.etcd import users
from nebula_id_operator import kube

PASSWORD_BYTES = 32
MANAGED_BY = {"app.kubernetes.io/managed-by": "nebula-id-operator"}


def owner_reference(name: str, uid: str) -> kopf.OwnerReference:
    """The pool as the Secret's owner, so the Secret goes when the pool goes."""
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


async def ensure(
    client: etcd.EtcdClient,
    api: kube.KubeApi,
    keys: pool_keys.PoolKeys,
    *,
    uid: str | None,
) -> str:
    """Make the pool's etcd user, role and Secret exist; returns the Secret's name."""
    secret = access.secret_name(keys.name)
    try:
        password = await api.read_secret_key(keys.namespace, secret, access.SECRET_PASSWORD_KEY)
        fresh = False
    except kube.SecretNotFound:
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        data: Mapping[str, str] = {
            access.SECRET_USERNAME_KEY: access.principal(keys),
            access.SECRET_PASSWORD_KEY: password,
        }
        owner = owner_reference(keys.name, uid) if uid else None
        fresh = await api.create_secret(
            keys.namespace, secret, data, labels=MANAGED_BY, owner=owner
        )
        if not fresh:  # another writer won the race: use what it wrote
            password = await api.read_secret_key(keys.namespace, secret, access.SECRET_PASSWORD_KEY)
    await users.ensure_pool_user(client, keys, password, set_password=fresh)
    return secret


async def remove(client: etcd.EtcdClient, keys: pool_keys.PoolKeys) -> None:
    """Delete the pool's etcd user and role (the Secret is garbage-collected with the pool)."""
    await users.delete_pool_user(client, keys)
