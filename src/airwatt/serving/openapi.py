"""The service's OpenAPI document (``/docs.json``), made to describe what the service really sends.

BentoML 1.4 publishes OpenAPI 3.0.2 built from the pydantic models, and three things in it are off:

- pydantic writes JSON Schema 2020-12: ``anyOf [X, {"type": "null"}]`` for an optional value (and BentoML,
  flattening a body's top-level fields, keeps ``X`` only: ``reason: null`` then breaks its own schema) and
  numeric ``exclusiveMinimum``. ``openapi_30`` rewrites a model's schema in OpenAPI 3.0's dialect
  (``nullable``; ``exclusiveMinimum: true`` beside ``minimum``); the body models use it (airwatt.serving.
  schemas), so BentoML reads the 3.0 form.
- BentoML documents its 400 body's ``detail`` as a string; it sends pydantic's list of errors.
- The service's own answers (409, 413, 415, 422, 503) are not documented.

``OpenAPIDocument`` (ASGI middleware) corrects the last two in the document BentoML serves.
"""

from __future__ import annotations

import json
from typing import Any

from airwatt.serving.guard import ASGIApp, Message, Receive, Scope, Send

NULL = {"type": "null"}
DOC_PATHS = frozenset({"/docs.json"})

ERROR_SCHEMA = {
    "type": "object",
    "title": "AirwattError",
    "required": ["error", "field"],
    "properties": {
        "error": {"type": "string", "description": "the field and the problem"},
        "field": {
            "type": "string",
            "nullable": True,
            "description": "the offending field, e.g. devices[3].start",
        },
        "devices": {
            "type": "array",
            "items": {"type": "string"},
            "description": "409: the devices to resend the history of",
        },
    },
}
VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "title": "InvalidArgument",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "title": "Message"},
        "detail": {
            "type": "array",
            "title": "Error Detail",
            "description": "pydantic's errors: loc (the field's path), msg, type",
            "items": {"type": "object"},
        },
    },
    "description": "Bad Request",
}
SERVICE_ERRORS = {
    "409": "session form without state on this worker: resend the listed devices' history",
    "413": "request body larger than serve.max_body_mib",
    "415": "a form or pickle body: send application/json",
    "422": "well-formed, but this model cannot answer it (the field says why)",
    "503": "this worker is busy (serve.max_concurrency): retry after Retry-After seconds",
}


def openapi_30(schema: Any) -> Any:
    """A pydantic JSON schema in OpenAPI 3.0's dialect: ``nullable`` instead of ``anyOf`` with null, and
    ``exclusiveMinimum``/``exclusiveMaximum`` as flags beside ``minimum``/``maximum``."""
    if isinstance(schema, list):
        return [openapi_30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: openapi_30(v) for k, v in schema.items()}
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = out.get(flag)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound], out[flag] = value, True
    variants = out.get("anyOf")
    if isinstance(variants, list) and NULL in variants:
        rest = [v for v in variants if v != NULL]
        del out["anyOf"]
        if len(rest) != 1:
            out["anyOf"] = rest
        elif "$ref" in rest[0]:
            out["allOf"] = rest  # a $ref takes no siblings in 3.0
        else:
            out = {**rest[0], **out}
        out["nullable"] = True
    return out


def corrected(doc: dict[str, Any]) -> dict[str, Any]:
    """BentoML's document with its 400 body as sent and the service's own error answers."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["InvalidArgument"] = VALIDATION_ERROR_SCHEMA
    schemas["AirwattError"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/AirwattError"}
    for item in doc.get("paths", {}).values():
        op = item.get("post")
        if op is None or "requestBody" not in op:
            continue
        for status, description in SERVICE_ERRORS.items():
            answer: dict[str, Any] = {
                "description": description,
                "content": {"application/json": {"schema": ref}},
            }
            if status == "503":
                answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
            op["responses"].setdefault(status, answer)
    return doc


class OpenAPIDocument:
    """Serves BentoML's OpenAPI document ``corrected`` (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in DOC_PATHS:
            return await self.app(scope, receive, send)
        start: Message = {}
        chunks: list[bytes] = []

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if start.get("status") == 200:
                body = json.dumps(corrected(json.loads(body))).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, hold)
