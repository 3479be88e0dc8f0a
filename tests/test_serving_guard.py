"""The service's ASGI guards (airwatt.serving.guard) on a stand-in endpoint, message by message: bodies over
the limit refused before the endpoint reads them (413, by Content-Length and by streamed size), form
bodies refused (415), calls over the worker's limit refused at once (503 with Retry-After). Against the real
`bentoml serve`: tests/test_serving_http.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from airwatt.serving.guard import BodyLimit, ConcurrencyLimit


class Endpoint:
    """Reads the whole body, answers 200 with its size; ``hold``: waits for it before answering (except
    /readyz)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.hold: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        if self.hold is not None and scope["path"] != "/readyz":
            await self.hold.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def call(
    app: Any,
    chunks: list[bytes],
    *,
    path: str = "/detect",
    method: str = "POST",
    length: bool = True,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], bytes, int]:
    """One request through ``app``: (status, headers, body, body messages the app read)."""
    headers = [(b"content-type", content_type.encode())]
    if length:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    got = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], got, b"".join(m.get("body", b"") for m in sent[1:]), read


def test_a_body_over_the_limit_is_a_413_before_the_endpoint_reads_it() -> None:
    endpoint = Endpoint()
    app = BodyLimit(endpoint, max_body_bytes=1000)
    status, headers, body, read = asyncio.run(call(app, [b"x" * 1001]))  # Content-Length says so
    assert status == 413 and read == 0 and endpoint.bodies == []
    assert json.loads(body)["field"] == "body" and "max_body_mib" in json.loads(body)["error"]
    assert headers["connection"] == "close"  # the unread body is not read and dropped
    status, _, _, read = asyncio.run(call(app, [b"x" * 400] * 5, length=False))  # chunked: counted
    assert status == 413 and read == 3 and endpoint.bodies == []  # stopped at the chunk past the limit
    status, _, body, _ = asyncio.run(call(app, [b"x" * 400, b"x" * 600], length=False))  # at the limit
    assert status == 200 and body == b"1000" and endpoint.bodies == [b"x" * 1000]
    status, _, body, _ = asyncio.run(call(app, [b"x" * 1000]))
    assert status == 200 and body == b"1000"


def test_form_bodies_are_a_415_and_probes_pass() -> None:
    endpoint = Endpoint()
    app = BodyLimit(endpoint, max_body_bytes=10)
    for media in (
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/vnd.bentoml+pickle",
    ):
        status, _, body, read = asyncio.run(call(app, [b"{}"], content_type=media))
        assert status == 415 and read == 0 and json.loads(body)["field"] == "content-type"
    assert asyncio.run(call(app, [b"{}"], content_type="text/plain"))[0] == 200  # read as JSON by BentoML
    assert asyncio.run(call(app, [b""], path="/readyz", method="GET"))[0] == 200


def test_calls_over_the_workers_limit_are_a_503_with_retry_after() -> None:
    async def scenario() -> list[tuple[int, dict[str, str]]]:
        endpoint = Endpoint()
        endpoint.hold = asyncio.Event()
        app = ConcurrencyLimit(
            endpoint, max_concurrency=2, retry_after_s=3, large_body_bytes=10, max_large_calls=1
        )
        held = [asyncio.create_task(call(app, [b"{}"])) for _ in range(2)]
        while len(endpoint.bodies) < 2:  # both in progress
            await asyncio.sleep(0)
        refused = await call(app, [b"{}"])
        probe = await call(app, [b""], path="/readyz", method="GET")  # probes and metrics never wait
        endpoint.hold.set()
        done = await asyncio.gather(*held)
        after = await call(app, [b"{}"])
        return [(s, h) for s, h, *_ in (refused, probe, *done, after)]

    (refused, refused_headers), (probe, _), *rest = asyncio.run(scenario())
    assert refused == 503 and refused_headers["retry-after"] == "3"
    assert probe == 200 and [s for s, _ in rest] == [200, 200, 200]  # the slots are free again


def test_large_bodies_have_a_smaller_limit_of_their_own() -> None:
    async def scenario() -> list[int]:
        endpoint = Endpoint()
        endpoint.hold = asyncio.Event()
        app = ConcurrencyLimit(
            endpoint, max_concurrency=4, retry_after_s=1, large_body_bytes=10, max_large_calls=1
        )
        held = asyncio.create_task(call(app, [b"x" * 11]))  # a large call in progress
        while not endpoint.bodies:
            await asyncio.sleep(0)
        second_large = await call(app, [b"x" * 11])
        unknown_length = await call(app, [b"x"], length=False)  # chunked: counted as large
        small = asyncio.create_task(call(app, [b"{}"]))  # a small one still gets in
        while len(endpoint.bodies) < 2:
            await asyncio.sleep(0)
        endpoint.hold.set()
        return [second_large[0], unknown_length[0], (await small)[0], (await held)[0]]

    assert asyncio.run(scenario()) == [503, 503, 200, 200]
