"""Create and remove a pool's etcd user and role (needs etcd's root role).

The permission list is `nebula_id.core.access.sidecar_permissions`; this module
only makes etcd match it: the role gets exactly those permissions (extra ones
are revoked, so a narrower keyspace takes effect on the next reconcile), the
user gets the role and, when asked, the password.  Every step is idempotent.
"""

from __future__ import annotations

from nebula_id.core import access
from nebula_id.core import keys as pool_keys
from nebula_id.etcd import client as etcd


async def ensure_pool_user(
    client: etcd.EtcdClient, keys: pool_keys.PoolKeys, password: str, *, set_password: bool
) -> bool:
    """Make the pool's role and user exist with the wanted rights; True if the user is new.

    An existing user keeps its password unless `set_password` (the credential in
    the pool's Secret was just created): changing it logs out every sidecar.
    """
    name = access.principal(keys)
    wanted = set(access.sidecar_permissions(keys))
    await client.role_add(name)
    held = set(await client.role_permissions(name))
    for permission in sorted(held - wanted, key=lambda p: (p.key, p.range_end)):
        await client.role_revoke(name, permission)
    for permission in sorted(wanted - held, key=lambda p: (p.key, p.range_end)):
        await client.role_grant(name, permission)
    created = await client.user_add(name, password)
    if not created and set_password:
        await client.user_change_password(name, password)
    await client.user_grant_role(name, name)
    return created


async def delete_pool_user(client: etcd.EtcdClient, keys: pool_keys.PoolKeys) -> None:
    """Remove the pool's user and role (absent ones are fine)."""
    name = access.principal(keys)
    await client.user_delete(name)
    await client.role_delete(name)
