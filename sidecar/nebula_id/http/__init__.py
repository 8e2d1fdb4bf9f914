"""The sidecar's HTTP adapter: aiohttp app factory, routes, middlewares, metrics.

Routes only wire the `nebula_id.sources` Protocols to HTTP; everything that
decides whether an ID is safe lives behind those Protocols.
"""
