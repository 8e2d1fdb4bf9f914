"""Who this process is in Kubernetes: the downward API's pod and node names."""

from __future__ import annotations

import dataclasses

from nebula_id.config import loader


@dataclasses.dataclass(frozen=True, slots=True)
class PodSettings:
    """The pod this process runs in; all None outside Kubernetes."""

    name: str | None = None
    """The pod's name (``NEBULA_POD_NAME``)."""
    namespace: str | None = None
    """The pod's namespace; fills a bare pool name."""
    uid: str | None = None
    """The pod's UID."""
    node_name: str | None = None
    """The node the pod runs on; the host name when None."""


FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field("pod_name", loader.optional_text, (), "downward API", attr="name"),
    loader.Field("pod_namespace", loader.optional_text, (), "downward API", attr="namespace"),
    loader.Field("pod_uid", loader.optional_text, (), "downward API", attr="uid"),
    loader.Field("node_name", loader.optional_text, (), "downward API"),
)
