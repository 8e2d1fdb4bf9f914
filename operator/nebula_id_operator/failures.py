"""Our errors, mapped to kopf's in one place.

Each error's class says whether it is `transient` (`nebula_id.errors`), and
that flag alone decides.  A failure that retrying can fix (etcd, a database or
the API server out of reach: every `errors.Unavailable`) becomes
`kopf.TemporaryError`, which kopf retries with the backoff below.  One that
only a change can fix (an invalid or unsafe spec, a missing Secret) becomes
`kopf.PermanentError`, so kopf does not hot-loop on it; the operator's slow
resync timer notices when the change (say, the Secret) arrives.
"""

from __future__ import annotations

import kopf

from nebula_id import errors

BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0)


def backoff(retry: int) -> float:
    """Seconds before retry number `retry` (0-based), capped."""
    return BACKOFF_SECONDS[min(retry, len(BACKOFF_SECONDS) - 1)]


def to_kopf(
    error: errors.NebulaIdError, *, retry: int
) -> kopf.TemporaryError | kopf.PermanentError:
    if error.transient:
        return kopf.TemporaryError(error.message, delay=backoff(retry))
    return kopf.PermanentError(error.message)
