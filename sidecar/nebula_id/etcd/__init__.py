"""The etcd adapter: a thin async client, the pool config writer and the leased worker ID.

`client` speaks etcd's gRPC-JSON gateway over aiohttp; `pools` validates and writes
pool configs (shared by `nebula-id pool` and the operator); `worker` claims a worker
ID under a lease and turns it into a fenced `SnowflakeSource`; `cache` keeps the last
known pool config in the data dir.
"""
