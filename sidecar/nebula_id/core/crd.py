"""The Kubernetes names of nebula-id, defined once.

The custom resource's coordinates, and the labels, annotations and finalizer
that the operator, the injection webhook, the sidecar and the tests agree on.
Plain constants with no imports, so that every layer can use them.  The CRD
manifest (`crds/nebulaidpools.yaml`) spells the same names; a unit test
compares the two.
"""

from __future__ import annotations

GROUP = "nebula-id.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "nebulaidpools"
SINGULAR = "nebulaidpool"
KIND = "NebulaIdPool"
LIST_KIND = "NebulaIdPoolList"
SHORT_NAMES = ("nip",)
CRD_NAME = f"{PLURAL}.{GROUP}"
"""The CustomResourceDefinition's own name."""

INJECT_LABEL = f"{GROUP}/inject"
"""Set to ``"true"`` on a pod that wants the sidecar."""
POOL_ANNOTATION = f"{GROUP}/pool"
"""Names the pool (in the pod's namespace) whose sidecar a pod gets."""
WORKER_ANNOTATION = f"{GROUP}/worker-id"
"""The worker ID a pod's sidecar holds, kept by the operator."""
DROP_DATA_ANNOTATION = f"{GROUP}/drop-data-on-delete"
"""``"true"`` on a pool: deleting it also drops its segment rows."""
FINALIZER = f"{GROUP}/finalizer"
"""The operator's finalizer on every pool."""
KOPF_PREFIX = GROUP
"""The prefix of the annotations where kopf keeps its progress and diff base."""
