"""The streaming runtime's pieces, in process: the prelude, error reports, the context,
app loading and the build check (the end-to-end behaviour is in test_streaming_runtime)."""

from __future__ import annotations

import base64
import json
import platform
import sys
from pathlib import Path

import h11
import pytest

from handler.streaming.asgi import encode_prelude
from handler.streaming.context import LambdaContext
from handler.streaming.runtime import InitError, check_build, load_app
from handler.streaming.runtime_api import ErrorReport, Invocation, RuntimeAPI


def test_the_prelude_is_json_then_eight_nuls() -> None:
    raw = encode_prelude(
        404,
        [
            (b"Content-Type", b"application/json"),
            (b"Vary", b"Origin"),
            (b"vary", b"Accept"),
            (b"Set-Cookie", b"a=1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"12"),
        ],
    )
    prelude, delimiter, rest = raw.partition(b"\x00" * 8)
    assert delimiter and rest == b""
    assert json.loads(prelude) == {
        "statusCode": 404,
        "headers": {"content-type": "application/json", "vary": "Origin, Accept"},
        "cookies": ["a=1"],
    }


def test_an_error_report_cannot_break_the_trailer_framing() -> None:
    report = ErrorReport("Function.Bad\r\nInjected: yes", "ValueError", "line one\r\nline two")
    # Framed as the runtime frames them (h11), then parsed back by h11 as a server would.
    client = h11.Connection(h11.CLIENT)
    head = h11.Request(method="POST", target="/r", headers=[("Host", "x"), ("Transfer-Encoding", "chunked")])
    wire = client.send(head) + client.send(h11.EndOfMessage(headers=report.trailers()))  # type: ignore[operator]
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    events = [server.next_event() for _ in range(2)]
    end = events[-1]
    assert isinstance(end, h11.EndOfMessage)
    trailers = {name.decode(): value.decode() for name, value in end.headers}
    assert trailers["lambda-runtime-function-error-type"] == "Function.Bad__Injected: yes"
    assert set(trailers) == {"lambda-runtime-function-error-type", "lambda-runtime-function-error-body"}
    body = base64.b64decode(trailers["lambda-runtime-function-error-body"], validate=True)
    assert json.loads(body)["errorMessage"] == "line one\r\nline two"


def test_an_error_report_without_details_names_only_the_class() -> None:
    try:
        raise RuntimeError("api key sk-secret leaked")
    except RuntimeError as error:
        hidden = ErrorReport.from_exception(error, "Function.ResponseStreamError", details=False)
        full = ErrorReport.from_exception(error, "Function.Unhandled")
    assert "sk-secret" not in hidden.payload().decode() and hidden.stack_trace == []
    assert "sk-secret" in full.payload().decode() and full.stack_trace


def test_the_context_counts_down_to_the_deadline() -> None:
    now = 1_800_000_000.0
    invocation = Invocation(
        request_id="r-1",
        deadline_ms=int(now * 1000) + 2500,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:f:live",
        body=b"{}",
        client_context=json.dumps({"client": {"app_title": "App"}, "custom": {"k": "v"}, "env": {"e": 1}}),
        cognito_identity=json.dumps({"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}),
    )
    clock = [now]
    context = LambdaContext(
        invocation,
        {"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"},
        clock=lambda: clock[0],
    )
    assert context.get_remaining_time_in_millis() == 2500
    clock[0] += 1.0
    assert context.get_remaining_time_in_millis() == 1500
    clock[0] += 10.0
    assert context.get_remaining_time_in_millis() == 0
    assert (context.function_name, context.memory_limit_in_mb, context.function_version) == ("f", 512, "$LATEST")
    assert context.invoked_function_arn.endswith(":live")
    assert context.client_context is not None and context.client_context.client.app_title == "App"
    assert context.client_context.custom == {"k": "v"}
    assert context.identity is not None and context.identity.cognito_identity_pool_id == "pool-1"
    broken = Invocation("r-2", 0, "", b"{}", client_context="not json")
    assert LambdaContext(broken, {}).client_context is None


def test_the_runtime_api_address() -> None:
    api = RuntimeAPI("127.0.0.1:9001")
    assert (api.host, api.port) == ("127.0.0.1", 9001)
    with pytest.raises(ValueError, match="host:port"):
        RuntimeAPI("localhost")


def test_loading_the_app_reports_what_went_wrong() -> None:
    assert callable(load_app("tests.e2e.apps:scope_echo"))
    with pytest.raises(InitError) as missing:
        load_app("tests.e2e.no_such_module:app")
    assert missing.value.category == "Runtime.ImportModuleError"
    with pytest.raises(InitError) as no_attribute:
        load_app("tests.e2e.apps:no_such_app")
    assert no_attribute.value.category == "Runtime.HandlerNotFound"
    with pytest.raises(InitError) as malformed:
        load_app("tests.e2e.apps")
    assert malformed.value.category == "Runtime.MalformedHandlerName"


def test_the_build_record_must_fit_this_python_and_machine(tmp_path: Path) -> None:
    assert check_build(tmp_path) is None  # a source checkout: nothing to check
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    arch = {"x86_64": "x86_64", "aarch64": "arm64"}[platform.machine()]
    other = {"x86_64": "arm64", "arm64": "x86_64"}[arch]
    record = tmp_path / "threadline-build.json"
    record.write_text(json.dumps({"python": here, "architecture": arch}))
    assert check_build(tmp_path) == {"python": here, "architecture": arch}
    record.write_text(json.dumps({"python": here, "architecture": other}))
    with pytest.raises(InitError) as wrong_machine:
        check_build(tmp_path)
    assert wrong_machine.value.category == "Runtime.ArchitectureMismatch"
