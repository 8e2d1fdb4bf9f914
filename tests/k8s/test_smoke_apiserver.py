"""Smoke test: the real kube-apiserver serves what the operator relies on.

A CRD is established, a custom resource round-trips, a watch reports its
changes, kubectl talks to the server, and the RBAC authoriser is on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client, config, watch

from tests.support.controlplane import ControlPlane

GROUP, VERSION, PLURAL = "smoke.nebula-id.io", "v1", "widgets"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                                "required": ["size"],
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> Iterator[str]:
    name = f"{PLURAL}.{GROUP}"
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    yield name
    control_plane.kubectl("delete", "crd", name, "--wait=false", check=False)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def custom_objects(kubeconfig: str) -> Iterator[client.CustomObjectsApi]:
    api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        api_client.close()


def _widget(name: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


def test_a_custom_resource_round_trips_and_its_changes_are_watched(
    crd: str, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    created = cast(
        dict[str, Any],
        custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _widget("w1", 3)
        ),
    )
    read = cast(
        dict[str, Any],
        custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1"),
    )
    assert read["spec"] == {"size": 3}
    assert read["metadata"]["uid"] == created["metadata"]["uid"]

    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "w1", {"spec": {"size": 5}}
    )
    events: Iterator[dict[str, Any]] = watch.Watch().stream(  # type: ignore[no-untyped-call]
        custom_objects.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        resource_version=created["metadata"]["resourceVersion"],
        timeout_seconds=10,
    )
    first = next(events)
    assert first["type"] == "MODIFIED"
    assert first["object"]["spec"]["size"] == 5


def test_the_schema_rejects_an_invalid_custom_resource(
    crd: str, namespace: str, control_plane: ControlPlane
) -> None:
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(_widget("bad", 0)), check=False
    )
    assert result.returncode != 0
    assert "spec.size" in result.stderr


def test_kubectl_lists_the_custom_resources(
    crd: str, namespace: str, control_plane: ControlPlane
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_widget("w2", 7)))
    listed = json.loads(control_plane.kubectl("get", PLURAL, "-n", namespace, "-o", "json").stdout)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["w2"]


def test_rbac_denies_a_service_account_without_bindings(control_plane: ControlPlane) -> None:
    answer = control_plane.kubectl(
        "auth",
        "can-i",
        "create",
        "pods",
        "--as=system:serviceaccount:default:nobody",
        check=False,
    )
    assert answer.stdout.strip() == "no"
    assert control_plane.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"


def test_pod_security_admission_rejects_a_privileged_pod(
    namespace: str, control_plane: ControlPlane
) -> None:
    control_plane.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "securityContext": {"privileged": True}}
            ]
        },
    }
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False
    )
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr
