"""The pure core: bit math, state machines and validation.

Nothing here imports aiohttp, asyncpg, kopf or an etcd client, and nothing reads
the real clock except through an injected `nebula_id.clock.Clock`.
"""
