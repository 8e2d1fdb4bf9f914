"""The sidecar's HTTP API as an OpenAPI 3 document, served at ``/openapi.json``.

Built from the running app (its `maxBatchSize`, whether API keys are on), so
what it says is what this sidecar does; schemathesis checks every answer of a
live sidecar against it in the test command.
"""

from __future__ import annotations

from nebula_id import __version__
from nebula_id.core.jsontypes import JsonObject, JsonValue

PATH = "/openapi.json"
JSON = "application/json"
TEXT = "text/plain"
BINARY = "application/octet-stream"

_ERROR_CODES = [
    "invalid_argument",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "rate_limited",
    "unavailable",
    "internal",
]


UNPARSABLE = (
    "a request line or header line longer than 8190 bytes, or more than 128 headers (on any path)"
)
"""What aiohttp's parser refuses before any route runs; the sidecar answers it in
the error shape too (`nebula_id.http.server`)."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, *, retry: bool = False) -> JsonObject:
    answer: JsonObject = {
        "description": description,
        "content": {JSON: {"schema": _ref("Error")}},
    }
    if retry:
        answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return answer


_RATE_HEADERS = {
    name: {"$ref": f"#/components/headers/{name}"}
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
}


def _ids_answers(*, binary: bool, guarded: bool) -> JsonObject:
    content: JsonObject = {
        JSON: {"schema": {"oneOf": [_ref("OneId"), _ref("ManyIds")]}},
        TEXT: {"schema": {"type": "string"}},
    }
    if binary:
        content[BINARY] = {"schema": {"type": "string", "format": "binary"}}
    answers: JsonObject = {
        "200": {
            "description": "One ID (`id`), or `count` IDs (`ids`); one a line as text/plain; "
            "big-endian int64s with `Accept: application/octet-stream` (64-bit IDs, batches)",
            "content": content,
            "headers": _RATE_HEADERS,
        },
        "400": _error("`count` is not an integer from 1 to maxBatchSize, or above the burst"),
        "404": _error("an unknown segment tag or algorithm"),
        "429": _error("this caller's rate limit is used up", retry=True),
        "503": _error(
            "no ID can be proven safe now; `reason` says why (lease_lost, "
            "clock_moved_backward, worker_ids_exhausted, segments_exhausted, not_ready)",
            retry=True,
        ),
    }
    if guarded:
        answers["401"] = _error("no API key, or not a valid one")
    return answers


def document(*, max_batch_size: int, api_keys: bool, largest_id: int) -> JsonObject:
    """The OpenAPI 3.0 document of a sidecar with these settings."""
    count: JsonObject = {
        "name": "count",
        "in": "query",
        "required": False,
        "description": "How many IDs (a batch); without it the answer holds one `id`.",
        "schema": {"type": "integer", "minimum": 1, "maximum": max_batch_size},
    }

    def ids_operation(
        summary: str, *, binary: bool, extra: list[JsonValue] | None = None
    ) -> dict[str, JsonObject]:
        return {
            "get": {
                "summary": summary,
                "parameters": [*(extra or []), count],
                "responses": _ids_answers(binary=binary, guarded=api_keys),
            }
        }

    tag: JsonObject = {"name": "tag", "in": "path", "required": True, "schema": {"type": "string"}}
    algorithm: JsonObject = {
        "name": "algorithm",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    open_ops: JsonObject = {"security": []}
    # By path, then by method: each operation's responses get the 400 below.
    paths: dict[str, dict[str, JsonObject]] = {
        "/v1/ids": ids_operation("An ID of the pool's default algorithm", binary=True),
        "/v1/ids/snowflake": ids_operation("Snowflake IDs (decimal strings)", binary=True),
        "/v1/ids/uuid7": ids_operation("UUIDv7s, canonical lowercase", binary=False),
        "/v1/ids/uuid4": ids_operation("UUIDv4s, canonical lowercase", binary=False),
        "/v1/ids/segment": ids_operation("Segment IDs of the first tag", binary=True),
        "/v1/ids/segment/{tag}": ids_operation("Segment IDs of a tag", binary=True, extra=[tag]),
        "/v1/ids/{algorithm}": ids_operation(
            "Any other algorithm name is a 404", binary=True, extra=[algorithm]
        ),
        "/v1/ids/snowflake/{id}/parse": {
            "get": {
                "summary": "Decode a Snowflake ID",
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "description": "A decimal ID of this pool's layout",
                        "schema": {"type": "integer", "minimum": 0, "maximum": largest_id},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The ID's parts",
                        "content": {JSON: {"schema": _ref("Parsed")}},
                        "headers": _RATE_HEADERS,
                    },
                    "400": _error("not a decimal 63-bit ID this layout could have issued"),
                    "429": _error("this caller's rate limit is used up", retry=True),
                    **({"401": _error("no valid API key")} if api_keys else {}),
                },
            }
        },
        "/v1/info": {
            "get": {
                "summary": "The pool, layout, datacenter, worker and lease state",
                "responses": {
                    "200": {
                        "description": "What this sidecar serves",
                        "content": {JSON: {"schema": {"type": "object"}}},
                        "headers": _RATE_HEADERS,
                    },
                    "429": _error("this caller's rate limit is used up", retry=True),
                    **({"401": _error("no valid API key")} if api_keys else {}),
                },
            }
        },
        "/healthz": {
            "get": {
                **open_ops,
                "summary": "Liveness",
                "responses": {
                    "200": {
                        "description": "The process answers",
                        "content": {JSON: {"schema": _ref("Status")}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                **open_ops,
                "summary": "Readiness of the default algorithm",
                "responses": {
                    "200": {
                        "description": "Ready",
                        "content": {JSON: {"schema": _ref("Status")}},
                    },
                    "503": _error("not ready; `reasons` lists why", retry=True),
                },
            }
        },
        "/metrics": {
            "get": {
                **open_ops,
                "summary": "Prometheus metrics (never rate limited)",
                "responses": {
                    "200": {
                        "description": "The text exposition format",
                        "content": {TEXT: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                **open_ops,
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.0",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    for item in paths.values():
        for operation in item.values():
            answers = operation["responses"]
            assert isinstance(answers, dict)  # every operation above has a responses object
            bad_request = answers.get("400")
            if isinstance(bad_request, dict):
                bad_request["description"] = f"{bad_request['description']}; or {UNPARSABLE}"
            else:
                answers["400"] = _error(UNPARSABLE)
    components: JsonObject = {
        "schemas": {
            "OneId": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "string", "minLength": 1}},
                "additionalProperties": False,
            },
            "ManyIds": {
                "type": "object",
                "required": ["ids"],
                "properties": {
                    "ids": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": max_batch_size,
                        "items": {"type": "string", "minLength": 1},
                    }
                },
                "additionalProperties": False,
            },
            "Parsed": {
                "type": "object",
                "required": ["id", "timestamp_ms", "timestamp", "datacenter", "worker"],
                "properties": {
                    "id": {"type": "string"},
                    "timestamp_ms": {"type": "integer"},
                    "timestamp": {"type": "string"},
                    "datacenter": {"type": "integer", "minimum": 0},
                    "worker": {"type": "integer", "minimum": 0},
                    "sequence": {"type": "integer", "minimum": 0},
                    "layout": {"type": "object"},
                },
            },
            "Status": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string"}},
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "reason", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": _ERROR_CODES},
                            "reason": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                    "reasons": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before asking again",
                "schema": {"type": "integer", "minimum": 1},
            },
            "X-RateLimit-Limit": {
                "description": "The caller's burst (with a rate limit)",
                "schema": {"type": "integer"},
            },
            "X-RateLimit-Remaining": {
                "description": "IDs the caller may still take now",
                "schema": {"type": "integer"},
            },
            "X-RateLimit-Reset": {
                "description": "Seconds until the caller's bucket is full",
                "schema": {"type": "integer"},
            },
        },
    }
    doc: JsonObject = {
        "openapi": "3.0.3",
        "info": {
            "title": "nebula-id sidecar",
            "version": __version__,
            "description": "Unique IDs over localhost. 64-bit IDs are decimal strings.",
        },
        "paths": paths,
        "components": components,
    }
    if api_keys:
        components["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
        doc["security"] = [{"apiKey": []}, {"bearer": []}]
    return doc
