"""Hypothesis on message and header parsing: always a 200 or a contract-shaped 4xx, never a 5xx.

Two levels:

- the session rules as pure functions (`validate_session_id`, `split_continuation`,
  `split_stateless`) and the request model (`ChatCompletionRequest.model_validate`):
  properties that must hold for any input;
- the app itself (in-process, on moto, with an API key configured): arbitrary JSON
  bodies and message lists (roles, content strings, part lists, nulls, unicode, huge
  numbers, nested junk, unknown fields) with arbitrary `X-Hermes-Session-Id`,
  `Idempotency-Key`, `Authorization` and `Content-Type` headers, on
  `/v1/chat/completions`, streamed or not;
- every route the app mounts (a new one fails `test_every_mounted_route_is_fuzzed`
  until it is listed): its path, query and header values in full Unicode, sent as
  the bytes a client would put on the wire: any plane, digits of every script (`²`,
  `٣`), 4,000 to 6,000-digit numbers, lone surrogates, NUL, values up to 9,000
  characters. Never a 5xx; every error in the contract's shape.

Bounded: `max_examples` per test (40 per route), derandomized, no example database. Two input
classes the fuzzer found crashing the service (now 400s) have tests of their own below,
since the broad strategies cannot produce them: unpaired UTF-16 surrogate escapes
(`"\\ud800"`, which `json.dumps` never writes) and JSON nested about 950 deep.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.testclient import TestClient

from core.chat import ChatService
from core.errors import ApiError, validation_error
from core.providers.echo import EchoProvider
from core.sessions import split_continuation, split_stateless, validate_session_id
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from core.wire import SYSTEM_ROLES, ChatCompletionRequest, ChatMessage
from handler.app import create_app
from tests.reliability.budget import RANDOM, examples
from tests.reliability.contract import assert_contract_error, sse_frames

KEY = "sk-fuzz-key-0123456789"
HEADER = "X-Hermes-Session-Id"
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ROLES = ["system", "developer", "user", "assistant", "tool", "function"]
FUZZ = settings(
    max_examples=examples(150),
    derandomize=not RANDOM,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# No shrinking: a failing request is reported as found (shrinking 5,000-character values
# one request at a time takes minutes).
PER_ROUTE = settings(FUZZ, max_examples=examples(40), phases=[Phase.explicit, Phase.generate])

# --------------------------------------------------------------------------- strategies

# JSON scalars as a hostile client sends them: huge and tiny numbers, unicode of every plane.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: 10**40 and -10**40 as well
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
session_ids = st.one_of(st.from_regex(VALID_ID, fullmatch=True), st.text(max_size=140))
# Numbers as a client may write them: ASCII, any script's digits (², ٣, Ⅻ: str.isdigit()
# takes some that int() refuses), or more digits than int() reads (4,300).
numberish = st.one_of(
    st.integers(min_value=-5, max_value=200).map(str),
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=4),
    st.integers(min_value=4000, max_value=6000).map(lambda n: "9" * n),
)
# Full Unicode, as a hostile client sends it in a path, a query or a header: any code
# point, numbers as above, lone surrogates (sent as their raw bytes, which every
# transport here carries), NUL, and very long values.
unicode_text = st.one_of(
    numberish,
    st.text(max_size=60),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
    st.builds(lambda a, b: a + "\x00" + b, st.text(max_size=8), st.text(max_size=8)),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(min_value=1000, max_value=9000)),
)


def wire(text: str) -> bytes:
    """What a client puts on the wire for `text`: UTF-8, lone surrogates included."""
    return text.encode("utf-8", "surrogatepass")


def header_bytes(text: str) -> bytes:
    """A header value on the wire: no real transport carries CR or LF inside one."""
    return wire(text).replace(b"\r", b"").replace(b"\n", b"")


header_text = st.one_of(st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=300), unicode_text)

part = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["text", "image_url", "input_audio", "refusal", "file"]), junk)},
    optional={"text": st.one_of(st.text(max_size=60), junk), "image_url": junk, "extra": junk},
)
content = st.one_of(st.text(max_size=80), st.none(), st.lists(part, max_size=4), junk)
message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(ROLES), st.sampled_from(ROLES), junk)},
    optional={
        "content": content,
        "name": st.one_of(st.text(max_size=20), junk),
        "tool_calls": st.one_of(st.lists(st.dictionaries(st.text(max_size=8), junk, max_size=3), max_size=2), junk),
        "tool_call_id": st.one_of(st.text(max_size=20), junk),
        "refusal": st.one_of(st.text(max_size=20), junk),
        "unknown_field": junk,
    },
)
# Messages a real client could send (every role, text or parts, tool calls, unicode), so
# that most fuzzed turns get through to the model and the store, not only to validation.
tool_call = st.fixed_dictionaries(
    {
        "id": st.text(max_size=12),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.text(max_size=12), "arguments": st.text(max_size=30)}),
    }
)
shaped_message = st.builds(
    lambda role, body, extra: {"role": role, "content": body, **extra},
    st.sampled_from(ROLES),
    st.one_of(
        st.text(max_size=80),
        st.lists(
            st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40)}), min_size=1, max_size=3
        ),
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.text(max_size=20),
            "tool_call_id": st.text(min_size=1, max_size=20),
            "tool_calls": st.lists(tool_call, min_size=1, max_size=2),
            "unknown_field": junk,
        },
    ),
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {"messages": st.one_of(st.lists(message, min_size=1, max_size=5), st.lists(message, max_size=5), junk)},
        optional={
            "model": st.one_of(st.just("echo"), st.text(max_size=10), junk),
            "stream": st.one_of(st.booleans(), junk),
            "stream_options": st.one_of(
                st.fixed_dictionaries({}, optional={"include_usage": st.one_of(st.booleans(), junk)}), junk
            ),
            "n": st.one_of(st.just(1), st.integers(), junk),
            "temperature": st.one_of(st.floats(allow_nan=False, allow_infinity=False), junk),
            "max_tokens": st.one_of(st.integers(), junk),
            "tools": st.one_of(st.lists(st.dictionaries(st.text(max_size=8), junk, max_size=3), max_size=2), junk),
            "tool_choice": junk,
            "metadata": st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3), junk),
            "stop": junk,
        },
    ),
    junk,  # bodies that are not even an object
)
valid_messages = st.lists(
    st.builds(
        lambda role, text: {"role": role, "content": text, **({"tool_call_id": "call_1"} if role == "tool" else {})},
        st.sampled_from(ROLES),
        st.text(max_size=20),
    ),
    min_size=1,
    max_size=8,
)
plausible_bodies = st.fixed_dictionaries(
    {"messages": valid_messages}, optional={"model": st.just("echo"), "stream": st.booleans()}
)
# How the body travels: JSON with or without ASCII escapes, or bytes that may not be JSON at all.
encoded_bodies = st.one_of(
    st.tuples(st.one_of(plausible_bodies, bodies), st.booleans()).map(
        lambda pair: json.dumps(pair[0], ensure_ascii=pair[1]).encode()
    ),
    st.binary(max_size=200),
)
authorization = st.one_of(
    st.just(f"Bearer {KEY}"),
    st.just(f"Bearer {KEY}"),
    st.none(),
    st.builds(lambda text: f"Bearer {text}", header_text),
    header_text,
)
optional_headers = st.fixed_dictionaries(
    {},
    optional={
        HEADER: st.one_of(session_ids.filter(lambda s: s.isascii() and "\r" not in s and "\n" not in s), header_text),
        "Idempotency-Key": header_text,
        "Content-Type": st.one_of(st.just("application/json"), st.just("text/plain"), header_text),
    },
)


# --------------------------------------------------------------------------- the app


@pytest.fixture
def api(moto_table: tuple[Any, str]) -> Iterator[TestClient]:
    client, name = moto_table
    app_settings = Settings(sessions_table=name, api_keys=(KEY,), idempotency_wait_seconds=0.2)
    service = ChatService(DynamoDBSessionStore(name, ttl_days=30, client=client), EchoProvider(), app_settings)
    with TestClient(create_app(service, settings=app_settings), raise_server_exceptions=False) as http:
        yield http


def assert_contract_answer(response: Any) -> None:
    """A 200 that is a whole answer, or an error in the contract's shape; never a 5xx."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert_contract_error(response.status_code, response.content, secrets=(KEY,))
        return
    if response.request.url.path != "/v1/chat/completions":
        return
    assert response.headers[HEADER]
    if response.headers["content-type"].startswith("text/event-stream"):
        frames = sse_frames(response.text)
        assert frames[-1] == "[DONE]", frames[-3:]
        for frame in frames[:-1]:
            assert json.loads(frame)["object"] == "chat.completion.chunk"
    else:
        body = response.json()
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"


def test_any_chat_request_gets_an_answer_or_a_contract_error(
    api: TestClient, report: Callable[[str, str], None]
) -> None:
    statuses: Counter[int] = Counter()

    @given(raw=encoded_bodies, headers=optional_headers, auth=authorization)
    @FUZZ
    def fuzz(raw: bytes, headers: dict[str, str], auth: str | None) -> None:
        if auth is not None:
            headers = {**headers, "Authorization": auth}
        # As bytes (httpx would refuse non-ASCII text): UTF-8, surrogates and all.
        on_wire = {name: header_bytes(value) for name, value in headers.items()}
        response = api.post("/v1/chat/completions", content=raw, headers=on_wire)
        statuses[response.status_code] += 1
        assert_contract_answer(response)
        if auth != f"Bearer {KEY}":
            assert response.status_code == 401

    fuzz()
    report("statuses", f"hypothesis: raw chat requests with any headers: {summary(statuses)}")


def test_any_message_list_gets_an_answer_or_a_contract_error(
    api: TestClient, report: Callable[[str, str], None]
) -> None:
    """Well-formed JSON, echo model, valid key: only the messages (and the session id) vary."""
    statuses: Counter[int] = Counter()

    @given(
        messages=st.lists(st.one_of(shaped_message, shaped_message, message), min_size=1, max_size=6),
        session=st.one_of(st.none(), session_ids.filter(str.isascii)),
        stream=st.booleans(),
    )
    @FUZZ
    def fuzz(messages: list[Any], session: str | None, stream: bool) -> None:
        headers = {"Authorization": f"Bearer {KEY}", **({HEADER: session} if session is not None else {})}
        body = {"model": "echo", "stream": stream, "messages": messages}
        response = api.post("/v1/chat/completions", json=body, headers=headers)
        statuses[response.status_code] += 1
        assert_contract_answer(response)
        if session is not None and not VALID_ID.fullmatch(session):
            assert response.status_code == 400  # invalid_session_id, unless the body was refused first

    fuzz()
    report("statuses", f"hypothesis: message lists, with or without a session: {summary(statuses)}")
    assert statuses[200] > 0, "no fuzzed message list got through to the model and the store"


def mounted_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, through included routers too."""
    found: set[tuple[str, str]] = set()
    pending = list(app.routes)
    while pending:
        route = pending.pop()
        if hasattr(route, "original_router"):
            pending.extend(route.original_router.routes)
        elif hasattr(route, "path"):
            found |= {(method, route.path) for method in getattr(route, "methods", None) or {"GET"} if method != "HEAD"}
    return found


# Every route, with a body that gets through to the route's own logic where it takes one,
# so the fuzzed path, query and header values are what decides the answer.
ROUTES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("POST", "/v1/chat/completions"): {"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
    ("POST", "/v1/responses"): {"model": "echo", "input": "hi"},
    ("GET", "/v1/responses/{response_id}"): None,
    ("DELETE", "/v1/responses/{response_id}"): None,
    ("GET", "/v1/models"): None,
    ("GET", "/v1/models/{model}"): None,
    ("GET", "/v1/responses/{response_id}/input_items"): None,
    ("POST", "/v1/responses/{response_id}/cancel"): None,
    ("GET", "/v1/sessions/{session_id}/stream"): None,
    ("POST", "/v1/sessions/{session_id}/stream/cancel"): None,
    ("POST", "/v1/conversations"): {"items": [{"role": "user", "content": "hi"}]},
    ("GET", "/v1/conversations/{conversation_id}"): None,
    ("POST", "/v1/conversations/{conversation_id}"): {"metadata": {"k": "v"}},
    ("DELETE", "/v1/conversations/{conversation_id}"): None,
    ("GET", "/v1/conversations/{conversation_id}/items"): None,
    ("POST", "/v1/conversations/{conversation_id}/items"): {"items": [{"role": "user", "content": "hi"}]},
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): None,
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): None,
    ("GET", "/v1/sessions"): None,
    ("GET", "/v1/sessions/{session_id}/messages"): None,
    ("DELETE", "/v1/sessions/{session_id}"): None,
    ("POST", "/v1/sessions/{session_id}/compact"): None,
    ("POST", "/v1/responses/compact"): {"model": "echo", "input": "hi"},
    ("GET", "/health"): None,
    ("GET", "/v1/health"): None,
    ("GET", "/"): None,
    ("GET", "/static/{name}"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/docs"): None,
    ("GET", "/docs/oauth2-redirect"): None,
    ("GET", "/redoc"): None,
}
KNOWN_SEGMENTS = {template: "app.js" if "static" in template else "0" for _, template in ROUTES}
"""A path value that exists (session "0" is created first; response ids never match it)."""
PATH_PARAMETER = re.compile(r"\{[a-z_]+\}")
QUERY_NAMES = ["limit", "after", "stream", "include", "starting_after", "order", "model"]
HEADER_NAMES = [HEADER, "Idempotency-Key", "Content-Type", "Accept", "Origin", "Access-Control-Request-Method"]


def test_every_mounted_route_is_fuzzed(api: TestClient) -> None:
    """A new route fails here until the fuzzer below covers it."""
    assert mounted_routes(api.app) == set(ROUTES)


@pytest.mark.parametrize("route", sorted(ROUTES), ids=" ".join)
def test_any_unicode_in_a_routes_path_query_and_headers_is_never_a_5xx(
    api: TestClient, report: Callable[[str, str], None], route: tuple[str, str]
) -> None:
    statuses: Counter[int] = Counter()
    method, template = route

    @given(
        segment=st.one_of(st.just(KNOWN_SEGMENTS[template]), unicode_text),
        query=st.tuples(
            st.fixed_dictionaries({}, optional={name: st.one_of(numberish, unicode_text) for name in QUERY_NAMES}),
            st.dictionaries(unicode_text, unicode_text, max_size=2),
        ).map(lambda pair: {**pair[1], **pair[0]}),
        headers=st.fixed_dictionaries({}, optional=dict.fromkeys(HEADER_NAMES, unicode_text)),
        wrong_key=st.one_of(st.none(), st.none(), st.none(), unicode_text),  # mostly the right key
        stream=st.booleans(),
    )
    @PER_ROUTE
    def fuzz(segment: str, query: dict[str, str], headers: dict[str, str], wrong_key: str | None, stream: bool) -> None:
        path = PATH_PARAMETER.sub(lambda _: quote_from_bytes(wire(segment), safe=""), template)
        if query:
            path += "?" + "&".join(
                f"{quote_from_bytes(wire(name), safe='')}={quote_from_bytes(wire(value), safe='')}"
                for name, value in query.items()
            )
        assume(len(path) < 60_000)  # httpx's limit; servers refuse far shorter URLs themselves
        # Header values travel as bytes (httpx would refuse non-ASCII text).
        raw_headers = {name: header_bytes(value) for name, value in headers.items()}
        raw_headers["Authorization"] = header_bytes(f"Bearer {KEY if wrong_key is None else wrong_key}")
        body = ROUTES[route]
        response = api.request(
            method, path, json=None if body is None else {**body, "stream": stream}, headers=raw_headers
        )
        statuses[response.status_code] += 1
        assert response.status_code < 500, (method, path[:200], response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert_contract_error(response.status_code, response.content, secrets=(KEY,))

    api.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {KEY}", HEADER: "0"},
    )  # one session to page through
    fuzz()
    report("statuses", f"hypothesis: {method} {template}, full-Unicode path, query, headers: {summary(statuses)}")
    assert sum(statuses.values()) - statuses[401] > 0, "no fuzzed request got past authentication"


def summary(statuses: Counter[int]) -> str:
    return f"{sum(statuses.values())} requests; " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))


# --------------------------------------------------------------------------- pure rules


@given(st.one_of(st.text(max_size=200), st.from_regex(VALID_ID, fullmatch=True)))
@settings(max_examples=500, derandomize=True, database=None)
def test_a_session_id_is_accepted_exactly_when_the_contract_says(raw: str) -> None:
    if VALID_ID.fullmatch(raw):
        assert validate_session_id(raw) == raw
    else:
        with pytest.raises(ApiError) as rejected:
            validate_session_id(raw)
        error = rejected.value
        assert (error.status, error.code, error.param) == (400, "invalid_session_id", HEADER)
        assert_contract_error(400, error.body())
        assert raw not in error.message or not raw  # the bad id is not echoed back


@given(valid_messages)
@settings(max_examples=300, derandomize=True, database=None)
def test_the_new_input_is_the_trailing_non_system_messages_after_the_last_assistant(raw: list[dict[str, Any]]) -> None:
    messages = [ChatMessage.model_validate(m) for m in raw]
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    expected = [m.stored() for m in messages[last_assistant + 1 :] if m.role not in SYSTEM_ROLES]
    system = [m.stored() for m in messages if m.role in SYSTEM_ROLES]
    if not expected:
        with pytest.raises(ApiError) as rejected:
            split_continuation(messages)
        assert rejected.value.status == 400 and rejected.value.param == "messages"
    else:
        split = split_continuation(messages)
        assert split.new_input == expected and split.system == system
    conversation = [m.stored() for m in messages if m.role not in SYSTEM_ROLES]
    if conversation:
        assert split_stateless(messages).new_input == conversation
    else:
        with pytest.raises(ApiError):
            split_stateless(messages)


@given(st.one_of(bodies, st.dictionaries(st.text(max_size=10), junk, max_size=5)))
@settings(max_examples=400, derandomize=True, database=None)
def test_the_request_model_accepts_or_gives_a_400_naming_the_field(data: Any) -> None:
    """Whatever the JSON, `model_validate` either accepts it or fails with a
    ValidationError that becomes a 400 in the contract's shape; nothing else escapes."""
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        api_error = validation_error(error.errors())
        assert api_error.status == 400
        assert_contract_error(400, api_error.body())
    else:
        assert request.messages and all(m.role in ROLES for m in request.messages)


# --------------------------------------------------------------------------- known crashes

SURROGATE = "\\ud800"  # a JSON escape for half a UTF-16 pair: valid JSON, not valid Unicode
SURROGATE_BODIES = {
    "content": {"messages": [{"role": "user", "content": SURROGATE}]},
    "content-streamed": {"stream": True, "messages": [{"role": "user", "content": SURROGATE}]},
    "content-part": {"messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]},
    "tool_call_id": {"messages": [{"role": "tool", "tool_call_id": SURROGATE, "content": "x"}]},
    "model": {"model": SURROGATE, "messages": [{"role": "user", "content": "x"}]},
}


@pytest.mark.parametrize("where", list(SURROGATE_BODIES))
def test_an_unpaired_surrogate_escape_is_a_400(api: TestClient, where: str) -> None:
    raw = json.dumps(SURROGATE_BODIES[where]).replace("\\\\ud800", "\\ud800").encode()
    assert b"\\ud800" in raw and b"\\\\" not in raw
    response = api.post("/v1/chat/completions", content=raw, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400, (response.status_code, response.text[:200])
    assert_contract_error(400, response.content)


@pytest.mark.parametrize("depth", [950, 5000])
def test_a_body_nested_absurdly_deep_is_a_400(api: TestClient, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    raw = '{"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "junk": ' + nested + "}]}]}"
    response = api.post("/v1/chat/completions", content=raw, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400, (response.status_code, response.text[:200])
    assert_contract_error(400, response.content)


# Issue 9, item 6: query values `str.isdigit()` accepted (`²`, `٣`: Unicode digits that
# int() refuses or reads as 3) and digit strings longer than int()'s 4,300-digit limit.
UNICODE_NUMBERS = [
    "²",
    "٣",
    "\u0661\u0660",  # Arabic-Indic 10
    "\U0001d7d9",  # mathematical double-struck 1
    "½",
    "9" * 5000,
    "1" * 4301,
    "0" * 20 + "5",
    "-1",
    "+5",
    " 5",
    "5\x00",
    "\U0010ffff",
]


@pytest.mark.parametrize("value", UNICODE_NUMBERS, ids=lambda v: repr(v[:8]) + (f"x{len(v)}" if len(v) > 8 else ""))
@pytest.mark.parametrize("name", ["limit", "after"])
@pytest.mark.parametrize("route", ["/v1/sessions", "/v1/sessions/0/messages"])
def test_a_paging_parameter_that_is_not_ascii_digits_is_a_400(
    api: TestClient, route: str, name: str, value: str
) -> None:
    api.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {KEY}", HEADER: "0"},
    )
    response = api.get(route, params={name: value}, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400, (response.status_code, response.text[:200])
    assert_contract_error(400, response.content)
    assert response.json()["error"]["param"] == name


def test_a_content_length_of_5000_digits_is_a_413_not_a_crash(api: TestClient) -> None:
    response = api.post(
        "/v1/chat/completions",
        content=b'{"messages": [{"role": "user", "content": "hi"}]}',
        headers={"Authorization": f"Bearer {KEY}", "Content-Length": "9" * 5000},
    )
    assert response.status_code == 413, (response.status_code, response.text[:200])
    assert_contract_error(413, response.content)


@pytest.mark.parametrize("name", ["%00", "app.js%00", "a" * 5000, "%ED%A0%80", "..%2Fapp.py"])
def test_an_asset_name_the_filesystem_cannot_take_is_a_404(api: TestClient, name: str) -> None:
    """`/static/%00` was a 500 (the path reached the filesystem, which raised)."""
    response = api.get(f"/static/{name}")
    assert response.status_code == 404, (response.status_code, response.text[:200])
    assert_contract_error(404, response.content)
