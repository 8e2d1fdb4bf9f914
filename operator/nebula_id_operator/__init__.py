"""The nebula-id operator: reconciles NebulaIdPool resources with kopf.

Handlers here stay thin; decisions (status, manifests, patches) are made by
pure functions in this package or in `nebula_id.core`.
"""
