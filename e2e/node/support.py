"""Helpers of the node tier's tests: the README's steps, etcd reads, waiting, pods.

Everything here talks to the node through `Node.sh` (``nsenter`` into its
namespaces): kubectl, helm and curl run there, next to the cluster.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support import waiting

from e2e.node.cluster import NODE_IP, REPO, Node

README = REPO / "README.md"
ETCD_ENDPOINT = f"http://{NODE_IP}:2379"


def readme_steps() -> list[list[str]]:
    """The commands of the README's "Running on Kubernetes" block, one argv each."""
    text = README.read_text()
    section = text.split("## Running on Kubernetes", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's 'Running on Kubernetes' has no sh block"
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    return [
        shlex.split(line)
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def localize(argv: list[str]) -> list[str]:
    """Paths of the repository made absolute (the commands run elsewhere)."""
    return [
        str(REPO / a) if (REPO / a).exists() and not a.startswith("-") and "/" in a else a
        for a in argv
    ]


def image_values(images: dict[str, Any]) -> list[str]:
    """`helm --set` flags that point the chart at the images built for the node."""
    flags = []
    for component in ("operator", "sidecar"):
        repository, tag = images[component].rsplit(":", 1)
        flags += [
            "--set",
            f"image.{component}.repository={repository}",
            "--set",
            f"image.{component}.tag={tag}",
            "--set",
            f"image.{component}.pullPolicy=Never",
        ]
    return flags


def wait_until(
    what: str, check: Callable[[], Any], *, timeout: float = 60, interval: float = 0.5
) -> Any:
    """`waiting.eventually` with the node's flakier probes: an exception counts as "not yet"."""
    return waiting.eventually(check, timeout, what=what, interval=interval, ignoring=(Exception,))


def etcd_keys(node: Node, prefix: str) -> dict[str, str]:
    """Keys (and values) under `prefix` in the node's etcd."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": _b64(prefix), "range_end": _b64(end)})
    out = node.sh("curl", "-fsS", "-X", "POST", f"{ETCD_ENDPOINT}/v3/kv/range", "-d", body).stdout
    kvs = json.loads(out).get("kvs", [])
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
        for kv in kvs
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def pods(node: Node, namespace: str, selector: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = node.kube_json("get", "pods", "-n", namespace, "-l", selector)[
        "items"
    ]
    return got


def running_pods(node: Node, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods that run and are Ready, not being deleted."""
    return [
        p
        for p in pods(node, namespace, selector)
        if not p["metadata"].get("deletionTimestamp")
        and p["status"].get("phase") == "Running"
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]


def exec_json(node: Node, namespace: str, pod: str, container: str, *argv: str) -> Any:
    out = node.kubectl(
        "exec", "-n", namespace, pod, "-c", container, "--", *argv, timeout=60
    ).stdout
    return json.loads(out)


def diagnostics(node: Node, namespace: str) -> str:
    """What went on in a namespace, for a failing test's output."""
    parts = [
        node.kubectl("get", "all,nip,events", "-n", namespace, "-o", "wide", check=False).stdout
    ]
    for pod in node.kube_json("get", "pods", "-n", namespace)["items"]:
        name = pod["metadata"]["name"]
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            logs = node.kubectl(
                "logs", "-n", namespace, name, "-c", c["name"], "--tail=30", check=False
            )
            parts.append(f"--- {name}/{c['name']}\n{logs.stdout}{logs.stderr}")
    return "\n".join(parts)


@contextlib.contextmanager
def explained(node: Node, *namespaces: str) -> Iterator[None]:
    """On failure, print the namespaces' objects and container logs (pytest shows them)."""
    try:
        yield
    except BaseException:
        for ns in namespaces:
            with contextlib.suppress(Exception):
                print(f"===== namespace {ns}\n{diagnostics(node, ns)}")
        raise


def write(node: Node, name: str, text: str) -> Path:
    path = node.state / "manifests" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path
