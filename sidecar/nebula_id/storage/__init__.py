"""Adapters that keep segment counters in a database; every SQL statement lives here.

`engines` is the entry point: the DSN's scheme picks `postgres` (PostgreSQL,
asyncpg) or `mysql` (MySQL and MariaDB, asyncmy), which hold one datacenter's
counters and provision them.  `postgres_source` assembles the cluster-mode
`SegmentSource` (one store per datacenter, failover between them, metrics);
`floored` checks every range against the segment floor kept in etcd and repairs
a row that went back; `health` reads the datacenter health the operator
publishes in etcd; `legacy` reads how far a replaced ID system went (Leaf's
table, a sequence); `sqlite` keeps the standalone sidecar's counters in SQLite.
"""
