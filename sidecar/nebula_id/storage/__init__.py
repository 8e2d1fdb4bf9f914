"""Adapters that keep segment counters in a database.

`postgres` holds one datacenter's counters in PostgreSQL (asyncpg) and
provisions them; `postgres_source` assembles the cluster-mode `SegmentSource`
(one store per datacenter, failover between them, metrics); `health` reads the
datacenter health the operator publishes in etcd.  The standalone SQLite store
lives in `nebula_id.standalone`.
"""
