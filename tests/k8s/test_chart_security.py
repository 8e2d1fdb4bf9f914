"""The chart's security defaults, rendered by the real helm.

It refuses an etcd that anyone on the network could rewrite (plain http:// or no
user) unless `etcd.allowInsecure` is set on purpose, and with an etcd user it
hands each pool its own etcd credential (and only then may create Secrets).
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.binaries import REPO_ROOT
from tests.support.controlplane import run_cli

CHART = REPO_ROOT / "helm" / "nebula-id"
SECURE = (
    "etcd.endpoints[0]=https://etcd.etcd.svc:2379",
    "etcd.tls.secretName=etcd-tls",
    "etcd.auth.secretName=etcd-root",
)


def template(helm_bin: str, *values: str) -> tuple[int, str, str]:
    argv = [helm_bin, "template", "ids", str(CHART), "-n", "ids", "--kube-version", "1.34.0"]
    for value in values:
        argv += ["--set", value]
    proc = run_cli(argv, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def operator_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def secret_verbs(docs: list[dict[str, Any]]) -> set[str]:
    role = next(
        d
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")
    )
    return {v for r in role["rules"] if "secrets" in r["resources"] for v in r["verbs"]}


def test_the_default_plaintext_unauthenticated_etcd_is_refused(helm_bin: str) -> None:
    code, _, err = template(helm_bin)
    assert code != 0
    assert "refusing a plaintext or unauthenticated etcd" in err
    assert "http://etcd.etcd.svc:2379 is not https://" in err
    assert "etcd.auth.secretName is empty" in err

    # TLS alone, or a user alone over plain http, is still refused.
    code, _, err = template(helm_bin, "etcd.endpoints[0]=https://etcd:2379")
    assert code != 0
    assert "etcd.auth.secretName is empty" in err
    code, _, err = template(helm_bin, "etcd.auth.secretName=etcd-root")
    assert code != 0
    assert "is not https://" in err
    code, _, err = template(helm_bin, *SECURE, "etcd.sidecar.endpoints[0]=http://etcd:2379")
    assert code != 0
    assert "http://etcd:2379 is not https://" in err


def test_allow_insecure_is_an_explicit_opt_in_without_pool_users(helm_bin: str) -> None:
    code, out, err = template(helm_bin, "etcd.allowInsecure=true")
    assert code == 0, err
    docs = documents(out)
    # Without an etcd user there is nobody to create pool users with.
    assert "NEBULA_OPERATOR_ETCD_POOL_USERS" not in operator_env(docs)
    assert secret_verbs(docs) == {"get"}


def test_with_tls_and_a_user_each_pool_gets_its_own_etcd_user(helm_bin: str) -> None:
    code, out, err = template(helm_bin, *SECURE)
    assert code == 0, err
    docs = documents(out)
    env = operator_env(docs)
    assert env["NEBULA_OPERATOR_ETCD_POOL_USERS"] == "true"
    assert env["NEBULA_ETCD_CA_FILE"].endswith("ca.crt")
    assert secret_verbs(docs) == {"get", "create"}

    code, out, err = template(helm_bin, *SECURE, "etcd.poolUsers=false")
    assert code == 0, err
    docs = documents(out)
    assert "NEBULA_OPERATOR_ETCD_POOL_USERS" not in operator_env(docs)
    assert secret_verbs(docs) == {"get"}
