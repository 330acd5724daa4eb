"""`make smoke URL=... KEY=...`: check a deployed stack for what only a deployment can show.

    python deploy/smoke.py --url https://abc123.execute-api.eu-west-1.amazonaws.com/prod --key KEY
                           [--origin https://app.example.com] [--model NAME] [--min-spread-ms 100]

Run it right after `sam deploy` (URL: the stack's `ApiUrl` output, `.../prod/v1`, or the
stage's URL `.../prod`; KEY: one of its API keys). Standard library only, so it runs
from any Python 3.11+. Each check is one or two real requests; together they show what
the local tests cannot, because they go through API Gateway, its response streaming and the function as deployed:

- `page`:     `GET /` serves the chat page (HTML);
- `models`:   `GET /v1/models` with the key lists the models (the first is used below);
- `auth`:     a wrong key gets 401 in OpenAI's error shape, as JSON, not a stream;
- `early error`: an invalid streamed request gets its 400 before the first byte (JSON
              with that status), not a 200 stream carrying an error or API Gateway's 502;
- `stream`:   a streamed chat turn: the time to the response's headers and to the first
              content, the gaps between chunks, `X-Hermes-Session-Id` on the streamed
              response, `data: [DONE]` at the end. It fails as *buffered* when fewer than
              3 reads carried content or the first content arrived less than
              `--min-spread-ms` (100 ms) before the last: a buffered response arrives in
              one piece at the end, whatever the model did;
- `continued turn`: a second turn on that session answers with the same session id,
              and the session's stored messages hold both turns;
- `cors`:     a CORS preflight. With `--origin` (an origin in the stack's CorsOrigins)
              it must be granted: that origin, POST, and the headers a browser client
              sends; the streamed turn above is then sent from that origin and must expose
              the session header. Without it, an invented origin must not be granted
              (unless the stack allows any origin, `*`, which is reported).

Prints one line per check and a summary; exit status 0 when all pass, 1 when any fails,
2 on bad arguments. The key is never printed.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SESSION_HEADER = "X-Hermes-Session-Id"
STREAM_PROMPT = "Count from 1 to 30, one number per line, and nothing else."
FOLLOW_UP = "Thanks. Now reply with the single word: done."
INVENTED_ORIGIN = "https://threadline-smoke.invalid"
MIN_CONTENT_READS = 3
USER_AGENT = "threadline-smoke/1"


@dataclass
class Result:
    name: str
    ok: bool
    detail: str


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    """By lower-case name; repeated headers joined with ", "."""
    body: bytes
    headers_at: float
    """Seconds from sending the request to the status line and headers."""
    reads: list[tuple[float, bytes]] = field(default_factory=list)
    """Each read of the body as it arrived: (seconds from sending, bytes)."""

    def json(self) -> Any:
        return json.loads(self.body)


class Target:
    """The deployed API: its base URL (stage path included) and the key."""

    def __init__(self, url: str, key: str, timeout: float) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        # The stack's ApiUrl output is the OpenAI base URL, `.../prod/v1`: the API's root is its parent.
        self.base = parts.path.removesuffix("/v1")
        self.key = key
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
        streamed: bool = False,
    ) -> Reply:
        """One request on a new connection; the body read as it arrives when `streamed`."""
        connection_class = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(self.host, self.port, timeout=self.timeout)
        sent_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if key is not None:
            sent_headers["Authorization"] = f"Bearer {key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent_headers["Content-Type"] = "application/json"
        try:
            started = time.monotonic()
            connection.request(method, self.base + path, body=data, headers=sent_headers)
            response = connection.getresponse()
            headers_at = time.monotonic() - started
            received: dict[str, str] = {}
            for name, value in response.getheaders():
                lower = name.lower()
                received[lower] = f"{received[lower]}, {value}" if lower in received else value
            reads: list[tuple[float, bytes]] = []
            if streamed:
                while chunk := response.read1(65536):
                    reads.append((time.monotonic() - started, chunk))
                content = b"".join(chunk for _, chunk in reads)
            else:
                content = response.read()
            return Reply(response.status, received, content, headers_at, reads)
        finally:
            connection.close()


def _error_shape(reply: Reply) -> str | None:
    """What is wrong with an OpenAI-shaped JSON error reply, or None."""
    if not reply.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {reply.headers.get('content-type')!r}, not JSON"
    try:
        error = reply.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"not OpenAI's error shape: {reply.body[:120]!r}"
    if not isinstance(error, dict) or not isinstance(error.get("message"), str) or "type" not in error:
        return f"not OpenAI's error shape: {reply.body[:120]!r}"
    return None


def check_page(target: Target) -> Result:
    reply = target.request("GET", "/")
    kind = reply.headers.get("content-type", "")
    if reply.status == 200 and kind.startswith("text/html") and b"<html" in reply.body.lower():
        return Result("page", True, f"GET / -> 200 text/html, {len(reply.body):,} bytes")
    return Result("page", False, f"GET / -> {reply.status} {kind!r}: {reply.body[:80]!r}")


def check_models(target: Target, wanted: str | None) -> tuple[Result, str | None]:
    reply = target.request("GET", "/v1/models", key=target.key)
    if reply.status != 200:
        return Result("models", False, f"GET /v1/models -> {reply.status}: {reply.body[:160]!r}"), None
    try:
        listed = reply.json()
        ids = [model["id"] for model in listed["data"]]
        assert listed["object"] == "list" and ids
    except (ValueError, KeyError, TypeError, AssertionError):
        return Result("models", False, f"not a model list: {reply.body[:160]!r}"), None
    if wanted is not None and wanted not in ids:
        return Result("models", False, f"{wanted!r} is not listed ({', '.join(ids)})"), None
    model = wanted or ids[0]
    return Result("models", True, f"{len(ids)} listed ({', '.join(ids[:5])}); using {model!r}"), model


def check_auth(target: Target, model: str) -> Result:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    reply = target.request("POST", "/v1/chat/completions", body=body, key="sk-threadline-smoke-wrong-key")
    problem = _error_shape(reply)
    if reply.status == 401 and problem is None:
        return Result("auth", True, "a wrong key -> 401, OpenAI error JSON")
    return Result("auth", False, f"a wrong key -> {reply.status}; {problem or reply.body[:120]!r}")


def check_early_error(target: Target, model: str) -> Result:
    body = {"model": model, "stream": True, "messages": "not a list"}
    reply = target.request("POST", "/v1/chat/completions", body=body, key=target.key)
    problem = _error_shape(reply)
    if reply.status == 400 and problem is None:
        return Result(
            "early error", True, "an invalid streamed request -> 400 before the first byte, OpenAI error JSON"
        )
    return Result(
        "early error", False, f"an invalid streamed request -> {reply.status}; {problem or reply.body[:120]!r}"
    )


@dataclass
class Streamed:
    result: Result
    session_id: str | None


def content_arrivals(reads: list[tuple[float, bytes]]) -> tuple[list[float], str, list[str]]:
    """(when each read that completed a content delta arrived, the text, problems) of an SSE body."""
    buffer = b""
    arrivals: list[float] = []
    text: list[str] = []
    problems: list[str] = []
    done = False
    for at, chunk in reads:
        buffer += chunk
        *events, buffer = buffer.split(b"\n\n")
        carried = False
        for event in events:
            for line in event.decode("utf-8", "replace").splitlines():
                if not line.startswith("data:"):
                    continue  # comments (keepalives) and other fields
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    continue
                try:
                    parsed = json.loads(data)
                except ValueError:
                    problems.append(f"a data line that is not JSON: {data[:60]!r}")
                    continue
                if "error" in parsed:
                    problems.append(f"an error in the stream: {json.dumps(parsed['error'])[:160]}")
                for choice in parsed.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        text.append(delta)
                        carried = True
        if carried:
            arrivals.append(at)
    if not done:
        problems.append("no `data: [DONE]` at the end")
    return arrivals, "".join(text), problems


def check_stream(target: Target, model: str, origin: str | None, min_spread_ms: float) -> Streamed:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": STREAM_PROMPT}]}
    headers = {"Accept": "text/event-stream", **({"Origin": origin} if origin else {})}
    reply = target.request("POST", "/v1/chat/completions", body=body, headers=headers, key=target.key, streamed=True)
    session_id = reply.headers.get(SESSION_HEADER.lower())
    if reply.status != 200:
        return Streamed(Result("stream", False, f"-> {reply.status}: {reply.body[:160]!r}"), session_id)
    problems: list[str] = []
    if not reply.headers.get("content-type", "").startswith("text/event-stream"):
        problems.append(f"content-type {reply.headers.get('content-type')!r}")
    if not session_id:
        problems.append(f"no {SESSION_HEADER} on the streamed response")
    if origin:
        if reply.headers.get("access-control-allow-origin") != origin:
            problems.append(f"the streamed response does not allow origin {origin}")
        if SESSION_HEADER.lower() not in reply.headers.get("access-control-expose-headers", "").lower():
            problems.append(f"the streamed response does not expose {SESSION_HEADER} to {origin}")
    arrivals, text, stream_problems = content_arrivals(reply.reads)
    problems += stream_problems
    if not text:
        problems.append("no content")
    spread_ms = (arrivals[-1] - arrivals[0]) * 1000 if arrivals else 0.0
    gaps = [(later - earlier) * 1000 for earlier, later in itertools.pairwise(arrivals)]
    timing = [f"headers {reply.headers_at * 1000:.0f} ms"]
    if reply.reads:
        timing.append(f"first byte {reply.reads[0][0] * 1000:.0f} ms")
    if arrivals:
        timing.append(f"first content {arrivals[0] * 1000:.0f} ms")
    timing.append(f"{len(arrivals)} reads with content over {spread_ms:.0f} ms")
    if gaps:
        timing.append(f"gaps median {statistics.median(gaps):.0f} ms, max {max(gaps):.0f} ms")
    if reply.reads:
        timing.append(f"end {reply.reads[-1][0] * 1000:.0f} ms")
    if len(arrivals) < MIN_CONTENT_READS or spread_ms < min_spread_ms:
        problems.append(
            f"buffered, not streamed: content came in {len(arrivals)} read(s) within {spread_ms:.0f} ms "
            f"(streamed means at least {MIN_CONTENT_READS} reads over at least {min_spread_ms:.0f} ms)"
        )
    detail = ", ".join(timing) + (f"; session {session_id}" if session_id else "")
    if problems:
        return Streamed(Result("stream", False, detail + "; " + "; ".join(problems)), session_id)
    return Streamed(Result("stream", True, detail), session_id)


def check_continued(target: Target, model: str, session_id: str | None) -> Result:
    if not session_id:
        return Result("continued turn", False, "no session id from the streamed turn to continue")
    body = {"model": model, "messages": [{"role": "user", "content": FOLLOW_UP}]}
    reply = target.request(
        "POST", "/v1/chat/completions", body=body, headers={SESSION_HEADER: session_id}, key=target.key
    )
    if reply.status != 200:
        return Result("continued turn", False, f"-> {reply.status}: {reply.body[:160]!r}")
    returned = reply.headers.get(SESSION_HEADER.lower())
    if returned != session_id:
        return Result("continued turn", False, f"answered with session {returned!r}, not {session_id!r}")
    try:
        content = reply.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return Result("continued turn", False, f"not a chat completion: {reply.body[:160]!r}")
    stored = target.request("GET", f"/v1/sessions/{session_id}/messages?limit=100", key=target.key)
    if stored.status != 200:
        return Result("continued turn", False, f"GET its messages -> {stored.status}: {stored.body[:160]!r}")
    roles = [message.get("role") for message in stored.json().get("data", [])]
    contents = [message.get("content") for message in stored.json().get("data", [])]
    if roles[-4:] != ["user", "assistant", "user", "assistant"] or FOLLOW_UP not in contents:
        return Result("continued turn", False, f"the session holds {roles}, not both turns")
    return Result(
        "continued turn",
        True,
        f"same session, {len(content or '')} characters; {len(roles)} messages stored",
    )


def check_cors(target: Target, origin: str | None) -> Result:
    asked = origin or INVENTED_ORIGIN
    requested = f"authorization, content-type, {SESSION_HEADER.lower()}"
    reply = target.request(
        "OPTIONS",
        "/v1/chat/completions",
        headers={"Origin": asked, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": requested},
    )
    allowed_origin = reply.headers.get("access-control-allow-origin")
    if reply.status >= 500:
        return Result("cors", False, f"preflight -> {reply.status}")
    if origin is None:
        if allowed_origin is None:
            return Result("cors", True, f"preflight from an origin not allowed -> {reply.status}, not granted")
        return Result("cors", True, f"the stack grants any origin ({asked} -> {allowed_origin}): CorsOrigins is *")
    granted = {name.strip().lower() for name in reply.headers.get("access-control-allow-headers", "").split(",")}
    methods = reply.headers.get("access-control-allow-methods", "")
    missing = [name.strip() for name in requested.split(",") if name.strip() not in granted]
    if 200 <= reply.status < 300 and allowed_origin == origin and "POST" in methods and not missing:
        return Result("cors", True, f"preflight from {origin} -> {reply.status}, POST and {requested} granted")
    return Result(
        "cors",
        False,
        f"preflight from {origin} -> {reply.status}, origin {allowed_origin!r}, methods {methods!r}, "
        f"headers not granted: {missing}",
    )


def run(target: Target, *, origin: str | None, model: str | None, min_spread_ms: float) -> list[Result]:
    results: list[Result] = []

    def attempt(name: str, check: Callable[[], Result]) -> Result:
        try:
            result = check()
        except (OSError, http.client.HTTPException, ValueError) as error:
            result = Result(name, False, f"{type(error).__name__}: {error}")
        results.append(result)
        return result

    attempt("page", lambda: check_page(target))
    chosen: list[str | None] = [None]

    def models() -> Result:
        result, chosen[0] = check_models(target, model)
        return result

    attempt("models", models)
    used = chosen[0] or model
    if used is None:
        results.append(Result("chat", False, "skipped: no model to ask (the models check failed)"))
        return results
    attempt("auth", lambda: check_auth(target, used))
    attempt("early error", lambda: check_early_error(target, used))
    streamed: list[Streamed] = []

    def stream() -> Result:
        streamed.append(check_stream(target, used, origin, min_spread_ms))
        return streamed[0].result

    attempt("stream", stream)
    session_id = streamed[0].session_id if streamed else None
    attempt("continued turn", lambda: check_continued(target, used, session_id))
    attempt("cors", lambda: check_cors(target, origin))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the stack's ApiUrl output (the stage included)")
    parser.add_argument("--key", required=True, help="one of the stack's API keys")
    parser.add_argument("--origin", help="a browser origin the stack allows (CorsOrigins)")
    parser.add_argument("--model", help="the model to ask (default: the first /v1/models lists)")
    parser.add_argument(
        "--min-spread-ms", type=float, default=100.0, help="streamed: content spread over at least this"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = parser.parse_args(argv)
    try:
        target = Target(args.url, args.key, args.timeout)
    except ValueError as error:
        parser.error(str(error))
    run_id = uuid.uuid4().hex[:8]
    print(f"smoke {run_id}: {args.url}", flush=True)
    started = time.monotonic()
    results = run(target, origin=args.origin, model=args.model, min_spread_ms=args.min_spread_ms)
    for result in results:
        print(f"  {'PASS' if result.ok else 'FAIL'}  {result.name:15} {result.detail}", flush=True)
    failed = [result.name for result in results if not result.ok]
    took = time.monotonic() - started
    if failed:
        print(f"smoke {run_id}: {len(failed)} of {len(results)} checks FAILED ({', '.join(failed)}) in {took:.1f} s")
        return 1
    print(f"smoke {run_id}: all {len(results)} checks passed in {took:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
