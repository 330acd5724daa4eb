"""The fake Runtime API is as strict as Lambda: what Lambda refuses or rewrites, it
refuses or rewrites too, and a framing mistake fails the test that made it.

Requests are sent here byte for byte (a raw socket) where the runtime's own client
could not make the mistake, and through `RuntimeAPI` (the runtime's client) where it can.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from handler.streaming.runtime_api import ErrorReport, RuntimeAPI
from tests.e2e.fake_runtime_api import FakeRuntimeAPI

STREAM_HEAD = (
    "POST /2018-06-01/runtime/invocation/{rid}/response HTTP/1.1\r\n"
    "Host: x\r\n"
    "Lambda-Runtime-Function-Response-Mode: {mode}\r\n"
    "Transfer-Encoding: chunked\r\n"
    "Content-Type: application/vnd.awslambda.http-integration-response\r\n"
    "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
    "Connection: close\r\n\r\n"
)


@pytest.fixture
def api() -> Iterator[FakeRuntimeAPI]:
    with FakeRuntimeAPI() as fake:
        yield fake


def raw(api: FakeRuntimeAPI, data: bytes) -> bytes:
    """Send `data` on a connection of its own; everything the fake answered."""
    host, port = api.address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def test_malformed_chunk_framing_fails_the_test() -> None:
    with pytest.raises(AssertionError, match=r"malformed HTTP/1\.1"), FakeRuntimeAPI() as api:
        invocation = api.queue({"x": 1})
        head = STREAM_HEAD.format(rid=invocation.request_id, mode="streaming").encode()
        answer = raw(api, head + b"5\r\nhello\r\nZZ\r\nbroken\r\n0\r\n\r\n")  # "ZZ" is no chunk size
        assert status_of(answer) == 400


def test_only_the_exact_streaming_mode_is_accepted(api: FakeRuntimeAPI) -> None:
    for mode in ("Streaming", "buffered", "streaming, streaming"):
        invocation = api.queue({"x": 1})
        head = STREAM_HEAD.format(rid=invocation.request_id, mode=mode).encode()
        answer = raw(api, head + b"2\r\nhi\r\n0\r\n\r\n")
        assert status_of(answer) == 400, mode
        assert invocation.response is None
    assert [refusal.status for refusal in api.refusals] == [400, 400, 400]
    # The exact value is accepted.
    invocation = api.queue({"x": 1})
    answer = raw(
        api, STREAM_HEAD.format(rid=invocation.request_id, mode="streaming").encode() + b"2\r\nhi\r\n0\r\n\r\n"
    )
    assert status_of(answer) == 202
    assert invocation.response is not None and invocation.response.body == b"hi"


def test_an_error_body_trailer_that_is_not_strict_base64_fails_the_test() -> None:
    with pytest.raises(AssertionError, match="strict base64"), FakeRuntimeAPI() as api:
        invocation = api.queue({"x": 1})
        head = STREAM_HEAD.format(rid=invocation.request_id, mode="streaming").encode()
        trailers = (
            b"Lambda-Runtime-Function-Error-Type: Function.Broken\r\nLambda-Runtime-Function-Error-Body: e30=!\r\n"
        )
        raw(api, head + b"2\r\nhi\r\n0\r\n" + trailers + b"\r\n")


def test_error_types_lambda_does_not_accept_become_runtime_unknown(api: FakeRuntimeAPI) -> None:
    client = RuntimeAPI(api.address)
    for category, recorded in [
        ("Function.Unhandled", "Function.Unhandled"),
        ("Runtime.NoResponse", "Runtime.NoResponse"),
        ("Bad", "Runtime.Unknown"),
        ("function.Lower", "Runtime.Unknown"),
        ("Function.Has2Digits", "Runtime.Unknown"),
        ("Function.", "Runtime.Unknown"),
    ]:
        invocation = api.queue({"x": 1})
        status = asyncio.run(client.post_error(invocation.request_id, ErrorReport(category, "E", "message")))
        assert status == 202
        assert invocation.error is not None
        assert (invocation.error.raw_error_type, invocation.error.error_type_header) == (category, recorded)

    # The same rule for the trailer of a streamed response.
    invocation = api.queue({"x": 1})

    async def stream_with(report: ErrorReport) -> int | None:
        stream = await client.open_stream(invocation.request_id, b"{}" + b"\x00" * 8)
        await stream.write(b"data")
        return await stream.finish(report)

    assert asyncio.run(stream_with(ErrorReport("Oops", "E", "m"))) == 202
    assert invocation.response is not None
    assert invocation.response.trailers["lambda-runtime-function-error-type"] == "Oops"
    assert invocation.response.error_type == "Runtime.Unknown"
    assert invocation.response.error_trailer() == {"errorMessage": "m", "errorType": "E", "stackTrace": []}


def test_a_second_answer_for_one_request_id_is_refused_with_403(api: FakeRuntimeAPI) -> None:
    client = RuntimeAPI(api.address)
    report = ErrorReport("Function.Unhandled", "ValueError", "first")
    invocation = api.queue({"x": 1})
    assert asyncio.run(client.post_error(invocation.request_id, report)) == 202
    assert asyncio.run(client.post_error(invocation.request_id, ErrorReport("Function.Again", "E", "x"))) == 403
    # A response after the error is refused too, and the error recorded first stays.
    answer = raw(api, STREAM_HEAD.format(rid=invocation.request_id, mode="streaming").encode() + b"0\r\n\r\n")
    assert status_of(answer) == 403
    assert invocation.error is not None and invocation.error.body["errorMessage"] == "first"
    assert invocation.response is None

    streamed = api.queue({"x": 1})
    head = STREAM_HEAD.format(rid=streamed.request_id, mode="streaming").encode()
    assert status_of(raw(api, head + b"2\r\nok\r\n0\r\n\r\n")) == 202
    assert status_of(raw(api, head + b"2\r\nno\r\n0\r\n\r\n")) == 403
    assert asyncio.run(client.post_error(streamed.request_id, report)) == 403
    assert streamed.response is not None and streamed.response.body == b"ok" and streamed.error is None
    assert [refusal.status for refusal in api.refusals] == [403, 403, 403, 403]


def test_the_response_content_type_is_passed_on(api: FakeRuntimeAPI) -> None:
    invocation = api.queue({"x": 1})
    body = b'{"answer": 42}'
    request = (
        f"POST /2018-06-01/runtime/invocation/{invocation.request_id}/response HTTP/1.1\r\n"
        f"Host: x\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    assert status_of(raw(api, request + body)) == 202
    response = invocation.response
    assert response is not None and response.complete
    assert response.content_type == "application/json; charset=utf-8"
    assert response.body == body and len(response.chunks) == 1
