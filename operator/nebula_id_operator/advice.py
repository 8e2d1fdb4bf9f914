"""What a user should do next, for each reason a pool is not Ready.

Condition messages and Events end with one of these sentences, so that
`kubectl describe nip` says both what is wrong and how to fix it, in words a
newcomer understands.  Pure: strings in, strings out.
"""

from __future__ import annotations

from nebula_id.core import pool as pools


def secret_hint(namespace: str, dc: pools.Datacenter) -> str:
    ref = dc.database_secret_ref
    name, key = (ref.name, ref.key) if ref is not None else ("<secret>", "dsn")
    return (
        f"Create it in the pool's namespace with the PostgreSQL DSN of datacenter {dc.name}: "
        f"kubectl create secret generic {name} -n {namespace} "
        f"--from-literal={key}=postgresql://USER:PASSWORD@HOST:5432/DATABASE "
        "(the operator retries by itself within a minute)."
    )


def next_step(reason: str, *, namespace: str, dc: pools.Datacenter | None = None) -> str:
    """The sentence that follows a failure with `reason` (an empty string if none fits)."""
    if reason == "SecretNotFound" and dc is not None:
        return secret_hint(namespace, dc)
    ref = dc.database_secret_ref if dc is not None else None
    where = f" in Secret {namespace}/{ref.name} (key {ref.key!r})" if ref is not None else ""
    steps = {
        "DatabaseUnavailable": (
            "Check that PostgreSQL is running and reachable from the operator's pod "
            "(host, port, DNS, NetworkPolicy) and that the DSN" + where + " is right; "
            "the operator retries with backoff."
        ),
        "DatabaseConflict": (
            "The database holds segment rows that this pool cannot take over; use another "
            "database or schema for this datacenter" + where + "."
        ),
        "KubernetesUnavailable": (
            "The operator could not read the Secret from the API server; check its RBAC "
            "(it needs get on secrets in this namespace). It retries with backoff."
        ),
        "InvalidSpec": "Fix spec as the message says and apply the pool again.",
        "StoredConfigUnreadable": (
            "The pool's config in etcd cannot be read by this operator version; check the "
            "operator's logs and that every operator replica runs the same version."
        ),
        "EtcdUnavailable": (
            "Check that etcd is running and reachable from the operator's pod (Helm value "
            "etcd.endpoints, TLS and auth Secrets); the operator retries with backoff."
        ),
    }
    return steps.get(reason, "")


def with_next_step(message: str, step: str) -> str:
    """`message`, ended as a sentence, then `step`."""
    if not step:
        return message
    text = message.rstrip()
    if not text.endswith((".", "!", "?")):
        text += "."
    return f"{text} {step}"


def unhealthy_hint(names: list[str]) -> str:
    shown = ", ".join(names)
    return (
        f"Sidecars take segment ranges from the healthy datacenters meanwhile. Check the "
        f"PostgreSQL of {shown} and its Secret; `kubectl get nip -o yaml` shows each "
        "datacenter's last check under status.datacenters."
    )
