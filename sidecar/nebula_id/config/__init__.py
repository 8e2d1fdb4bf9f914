"""Every process's settings: one frozen dataclass per concern, read by one loader.

A setting is read from its command-line flag, then its ``NEBULA_*`` environment
variable, then the ``--config`` TOML file, then its default (`loader`); a bad
value fails at start-up naming its source (``--port``, ``NEBULA_PORT``,
``config.toml [app] port``).  The concerns:

- `http`, `auth`, `etcd`, `database`, `snowflake`, `segment`, `failover`,
  `log`, `pod`: the sidecar's, composed by `serve.ServeSettings`;
- `operator` (with `etcd`, `webhook`, `injection`, `log`, `pod`): the operator's;
- `poolcmd` (with `etcd`, `database`): `nebula-id pool`'s.

`etcd` is shared by all three processes, so the same endpoint settings give the
same URLs and the same TLS choice everywhere.

This package is the only reader of ``os.environ`` for settings.  The one
process-level exception is ``KUBECONFIG``, which kopf's login reads itself
when the operator runs outside a cluster (Kubernetes' own convention, not a
nebula-id setting).

The package imports no I/O framework (no aiohttp, no kopf), so every command
can load its settings cheaply.
"""
