"""ASGI middleware in front of the endpoints: bounded bodies and bounded work in progress, per worker.

- ``BodyLimit``: a body larger than ``max_body_bytes`` is answered 413 before anything parses it: at once
  by its ``Content-Length``, or, for a chunked body (no length), as soon as the bytes received pass the
  limit (a chunked body is read here, up to the limit, and handed on whole). A body BentoML would decode
  as a form or a pickle (multipart/form-data, application/x-www-form-urlencoded, BentoML's own types) is
  answered 415: the endpoints take JSON (any other content type is read as JSON, as BentoML does).
- ``ConcurrencyLimit``: at most ``max_concurrency`` calls in progress in this worker, of which at most
  ``max_large_calls`` with a body over ``large_body_bytes`` (a month of readings parses into a few hundred
  MiB); one more is answered at once with 503 and ``Retry-After``, instead of waiting behind the others
  without bound. Health, readiness and metrics are never refused.

BentoML's own ``traffic.max_concurrency`` answers 429 without ``Retry-After`` (bentoml 1.4's
MaxConcurrencyMiddleware), which clients and load balancers read as "this client sends too much" rather
than "this replica is busy, retry shortly": it is left unset (docs/serving.md).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Never refused or limited: BentoML's probes and metrics (its MaxConcurrencyMiddleware skips the same).
UNLIMITED_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
NOT_JSON = ("multipart/", "application/x-www-form-urlencoded", "application/vnd.bentoml")


async def _answer(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None, close: bool = False
) -> None:
    """A JSON answer straight from the middleware; ``close``: the server closes the connection after it
    (instead of reading and dropping an unread body that may be large)."""
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class BodyLimit:
    """413 for a body over ``max_body_bytes``, 415 for a form or pickle body (module docstring)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self, size: str) -> dict[str, Any]:
        return {
            "error": f"request body of {size} is larger than the {self.max_body_bytes:,} bytes allowed "
            "(serve.max_body_mib); send fewer readings per call",
            "field": "body",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        media = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if media.startswith(NOT_JSON):
            error = {"error": f"content-type {media!r}: send application/json", "field": "content-type"}
            await _answer(send, 415, error, close=True)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            if length.strip().isdigit() and int(length) > self.max_body_bytes:
                await _answer(send, 413, self._too_large(f"{int(length):,} bytes"), close=True)
                return
            return await self.app(scope, receive, send)  # the server holds the body to its length
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(
                    send, 413, self._too_large(f"more than {self.max_body_bytes:,} bytes"), close=True
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ConcurrencyLimit:
    """503 with ``Retry-After`` while ``max_concurrency`` calls are in progress here, or, for a call with a
    body over ``large_body_bytes`` (or of unknown length), while ``max_large_calls`` such calls are: a large
    body costs many times its size once parsed (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        max_concurrency: int,
        retry_after_s: int,
        large_body_bytes: int,
        max_large_calls: int,
    ) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.retry_after_s = retry_after_s
        self.large_body_bytes = large_body_bytes
        self.max_large_calls = max_large_calls
        self.in_progress = 0
        self.large_in_progress = 0

    def _large(self, scope: Scope) -> bool:
        if scope["method"] in ("GET", "HEAD"):
            return False
        length = _header(scope, b"content-length")
        return length is None or not length.strip().isdigit() or int(length) > self.large_body_bytes

    async def _busy(self, send: Send, what: str) -> None:
        body = {"error": f"this worker is busy ({what}): retry after {self.retry_after_s} s", "field": None}
        await _answer(send, 503, body, {"Retry-After": str(self.retry_after_s)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            return await self.app(scope, receive, send)
        if self.in_progress >= self.max_concurrency:
            return await self._busy(send, f"{self.max_concurrency} calls in progress, serve.max_concurrency")
        large = self._large(scope)
        if large and self.large_in_progress >= self.max_large_calls:
            what = (
                f"{self.max_large_calls} calls with bodies over {self.large_body_bytes:,} bytes in progress"
            )
            return await self._busy(send, f"{what}, serve.max_large_calls")
        self.in_progress += 1
        self.large_in_progress += large
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1
            self.large_in_progress -= large
