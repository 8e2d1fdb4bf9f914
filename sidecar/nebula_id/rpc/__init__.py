"""The sidecar's gRPC adapter: the HTTP API as `nebula_id.v1.Ids` (ids.proto).

Optional (``pip install 'nebula-id[grpc]'``, ``--grpc-port``).  The servicer
wires the same `nebula_id.sources` to gRPC that the HTTP routes wire to HTTP;
the code of ``ids_pb2*`` is generated at build time by `codegen`.
"""
