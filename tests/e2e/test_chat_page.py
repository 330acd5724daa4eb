"""The chat page in a real browser.

Debian's Chromium (/usr/bin/chromium), driven by Playwright (the Python package,
launched with that browser: nothing is downloaded), against a real uvicorn server on
DynamoDB Local with the echo model. The tests assert on the page itself; no
screenshot is kept.

`make test` installs both (`make browser`, mk/browser.mk). Where either is missing
these tests skip with the reason, unless THREADLINE_BROWSER_TESTS=required, which
turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from core.chat import ChatService
from core.errors import ApiError
from core.providers.base import ModelRequest, ProviderEvent, TextDelta
from core.providers.echo import EchoProvider, message_text
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from tests.servers import LiveServer

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - reported by the `browser` fixture
    expect = sync_playwright = None

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = os.environ.get("THREADLINE_CHROMIUM", "/usr/bin/chromium")
# Flags for this machine's closed network: no background requests, no QUIC, no sync.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SESSION_HEADER = "X-Hermes-Session-Id"
WAIT_MS = 10_000
KEY = "threadline.apiKey"
SESSION = "threadline.sessionId"


# ---------------------------------------------------------------- the browser


def _missing() -> str | None:
    if sync_playwright is None:
        return "the playwright package is not installed: `make browser` installs requirements-browser.txt"
    if not Path(CHROMIUM).is_file():
        return f"Chromium is not at {CHROMIUM}: `make browser` installs Debian's chromium package"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("THREADLINE_BROWSER_TESTS") == "required":
            pytest.fail(f"browser tests required, but {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    assert sync_playwright is not None and expect is not None
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            yield launched
        finally:
            launched.close()


# ---------------------------------------------------------------- the server


class TroubleProvider(EchoProvider):
    """The echo model, except that it refuses `refuse` (a 429 before any token) and
    breaks on `break` (a 502 after two pieces of an answer)."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        said = next((message_text(m) for m in reversed(request.messages) if m.get("role") == "user"), "")
        if "refuse" in said:
            raise ApiError(
                429, "The model provider is rate limiting requests; retry shortly.", code="rate_limit_exceeded"
            )
        if "break" in said:
            yield TextDelta("Partial")
            yield TextDelta(" answer")
            raise ApiError(502, "The model provider failed while answering.", code="provider_error")
        async for event in super().stream(request):
            yield event


@dataclass
class Site:
    url: str
    key: str | None = None

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def say(self, text: str, session: str) -> None:
        """One non-streamed turn through the API, outside the browser."""
        response = self.api(
            "POST",
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": text}]},
            headers={SESSION_HEADER: session},
        )
        assert response.status_code == 200, response.text

    def sessions(self) -> list[dict[str, Any]]:
        response = self.api("GET", "/v1/sessions")
        assert response.status_code == 200, response.text
        return list(response.json()["data"])


@pytest.fixture
def serve(local_table: tuple[Any, str]) -> Iterator[Callable[..., Site]]:
    """Start Threadline on DynamoDB Local (a fresh table); every server stops at the end."""
    client, name = local_table
    with ExitStack() as stack:

        def start(
            *, delay: float = 0.05, api_keys: tuple[str, ...] = (), provider: Any = None, stage: str = ""
        ) -> Site:
            store = DynamoDBSessionStore(name, ttl_days=30, client=client)
            settings = Settings(sessions_table=name, api_keys=api_keys)
            service = ChatService(store, provider or EchoProvider(delay_seconds=delay), settings)
            app: Any = create_app(service, settings=settings)
            if stage:  # served under a path prefix, as API Gateway's stage (`/prod/`) does
                app = Starlette(routes=[Mount(stage, app=app)])
            live = stack.enter_context(LiveServer(app))
            return Site(live.url + stage, key=api_keys[0] if api_keys else None)

        yield start


class Cable:
    """A TCP proxy between the browser and the server that a test can unplug: every
    open connection is cut (as a dropped network cuts it, mid-answer), and while
    unplugged a new connection is closed as soon as it is made."""

    def __init__(self, target: str) -> None:
        self.target = ("127.0.0.1", int(target.rpartition(":")[2]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.plugged = threading.Event()
        self.plugged.set()
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.plugged.is_set():
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self.lock:
                self.open |= {client, server}
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._cut(end)

    def _cut(self, end: socket.socket) -> None:
        with self.lock:
            self.open.discard(end)
        with suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    def unplug(self) -> None:
        self.plugged.clear()
        with self.lock:
            ends = list(self.open)
        for end in ends:
            self._cut(end)

    def plug(self) -> None:
        self.plugged.set()

    def close(self) -> None:
        self.closed = True
        self.unplug()
        self.listener.close()


@pytest.fixture
def cable() -> Iterator[Callable[[Site], tuple[Site, Cable]]]:
    """The site behind a cable the test can unplug; every cable is closed at the end."""
    cables: list[Cable] = []

    def through(site: Site) -> tuple[Site, Cable]:
        cable = Cable(site.url)
        cables.append(cable)
        return Site(cable.url, key=site.key), cable

    yield through
    for each in cables:
        each.close()


# ---------------------------------------------------------------- pages


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open the chat page in a fresh browser context (its own localStorage).

    Whatever the test, the page must log no script error or CSP violation and request
    nothing from any host but the server.
    """
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def open_(site: Site, *, width: int = 1100, height: int = 800, scheme: str = "light") -> Page:
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()

        def on_console(message: Any) -> None:
            # Chromium logs every 4xx/5xx answer as "Failed to load resource": those are
            # the API errors the tests ask for. Anything else (an exception, a CSP
            # violation) is a problem.
            if message.type == "error" and not message.text.startswith("Failed to load resource"):
                problems.append(f"console: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "request",
            lambda request: (
                None
                if request.url.startswith((site.url + "/", "data:"))
                else problems.append(f"request to another host: {request.url}")
            ),
        )
        page.goto(site.url + "/")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []


def ready(page: Page) -> None:
    page.wait_for_selector("html[data-ready]", state="attached")


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def answered(page: Page, count: int) -> None:
    """Wait until `count` answers are complete (streamed to the end)."""
    expect(page.locator(".message.assistant:not(.streaming)")).to_have_count(count)
    expect(page.locator(".message.assistant.streaming")).to_have_count(0)


def last_answer(page: Page) -> str:
    return page.locator(".message.assistant .body").last.inner_text()


def open_session(page: Page, title: str) -> None:
    page.locator(".session-open", has=page.locator(".session-title", has_text=title)).click()


def stored(page: Page, name: str) -> Any:
    return page.evaluate("(name) => localStorage.getItem(name)", name)


# ---------------------------------------------------------------- the tests


def test_a_reply_streams_in_pieces_survives_a_reload_and_continues_the_session(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    site = serve(delay=0.05)
    page = open_page(site)
    ready(page)
    expect(page.locator("#key-dialog")).to_be_hidden()  # an open API asks for no key
    expect(page.locator("#model")).to_have_value("echo")
    expect(page.locator("#welcome")).to_be_visible()

    # Record every text the answer shows while it streams in.
    page.evaluate(
        """() => {
            window.__seen = [];
            window.__stopShown = false;
            new MutationObserver(() => {
                const bodies = document.querySelectorAll('.message.assistant .body');
                const text = bodies.length ? bodies[bodies.length - 1].textContent : '';
                if (text && window.__seen[window.__seen.length - 1] !== text) {
                    window.__seen.push(text);
                    window.__stopShown ||= getComputedStyle(document.getElementById('stop')).display !== 'none';
                }
            }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
        }"""
    )
    with page.expect_request("**/v1/chat/completions") as first:
        send(page, "hello there")
    assert SESSION_HEADER.lower() not in first.value.headers  # a new chat sends no session id
    answered(page, 1)
    assert page.evaluate("() => window.__stopShown")  # Stop was offered while the answer streamed
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_visible()
    final = "Echo: hello there (I was given 1 message.)"
    assert last_answer(page) == final
    seen: list[str] = page.evaluate("() => window.__seen")
    assert len(seen) >= 4, seen  # many pieces, not one block
    assert seen[-1] == final
    assert all(final.startswith(text) for text in seen), seen  # each a longer prefix of the answer
    assert len(seen[0]) < len(final) / 2

    session_id = stored(page, SESSION)
    assert session_id
    [summary] = site.sessions()
    assert summary["id"] == session_id and summary["message_count"] == 2
    expect(page.locator(".session.current .session-title")).to_have_text("hello there")

    # After a reload the conversation is still there, read back from the API.
    page.reload()
    ready(page)
    expect(page.locator(".message.user .body")).to_have_text(["hello there"])
    expect(page.locator(".message.assistant .body")).to_have_text([final])
    expect(page.locator("#welcome")).to_be_hidden()

    # The next message carries the session id and continues the session.
    with page.expect_request("**/v1/chat/completions") as second:
        send(page, "and again")
    assert second.value.headers[SESSION_HEADER.lower()] == session_id
    assert json.loads(second.value.post_data or "{}")["messages"] == [{"role": "user", "content": "and again"}]
    answered(page, 2)
    assert last_answer(page) == "Echo: and again (I was given 3 messages.)"
    assert stored(page, SESSION) == session_id
    assert site.sessions()[0]["message_count"] == 4

    # "New chat" starts over: a new session, no history.
    page.click("#new-chat")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#welcome")).to_be_visible()
    assert stored(page, SESSION) is None
    expect(page.locator("#prompt")).to_be_focused()
    send(page, "fresh start")
    answered(page, 1)
    assert last_answer(page) == "Echo: fresh start (I was given 1 message.)"
    assert stored(page, SESSION) not in (None, session_id)
    expect(page.locator(".session")).to_have_count(2)
    expect(page.locator(".session-title").first).to_have_text("fresh start")


def test_stop_aborts_the_answer_and_nothing_is_kept(serve: Callable[..., Site], open_page: Callable[..., Page]) -> None:
    site = serve(delay=0.2)
    page = open_page(site)
    ready(page)
    send(page, "one two three four five six seven eight")
    expect(page.locator(".message.assistant .body").last).to_contain_text("Echo: one")
    page.click("#stop")
    expect(page.locator(".message.assistant .notice")).to_contain_text("Stopped")
    expect(page.locator("#send")).to_be_visible()
    partial = last_answer(page)
    assert partial.startswith("Echo: one") and "I was given" not in partial
    time.sleep(0.6)  # the rest of the answer would have arrived by now
    assert "I was given" not in last_answer(page)
    # A turn whose client went away is not stored, so the next one starts clean.
    assert [s["message_count"] for s in site.sessions()] == []
    send(page, "after stop")
    answered(page, 2)
    assert last_answer(page) == "Echo: after stop (I was given 1 message.)"


# ---------------------------------------------------------------- resumable answers

# Forty words: at 0.1 s a word the answer takes about five seconds to stream.
LONG = " ".join(f"w{number}" for number in range(1, 41))
LONG_ANSWER = f"Echo: {LONG} (I was given 1 message.)"
STREAM_PATH = "/stream"

# Every text the last answer shows, from the document's start (before the page's own
# script runs), so a reloaded page's resumed answer is watched from its first render.
WATCH_ANSWER = """
window.__seen = [];
new MutationObserver(() => {
    const bodies = document.querySelectorAll('.message.assistant .body');
    const text = bodies.length ? bodies[bodies.length - 1].textContent : '';
    if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


def _streamed_part_way(page: Page) -> str:
    """Wait until some, not all, of the long answer is on the page; its text."""
    expect(page.locator(".message.assistant .body").last).to_contain_text("w6")
    shown = last_answer(page)
    assert LONG_ANSWER.startswith(shown) and "w30" not in shown, shown
    return shown


def _stored_turns(site: Site, session_id: str) -> list[tuple[str, str]]:
    response = site.api("GET", f"/v1/sessions/{session_id}/messages")
    assert response.status_code == 200, response.text
    return [(message["role"], message["content"]) for message in response.json()["data"]]


def _assert_answered_once(page: Page, site: Site, session_id: str) -> None:
    """The long answer is complete on the page, shown once, and stored once."""
    answered(page, 1)
    expect(page.locator(".message.user .body")).to_have_text([LONG])
    expect(page.locator(".message.assistant .body")).to_have_text([LONG_ANSWER])
    seen: list[str] = page.evaluate("() => window.__seen")
    # Every text shown on the way is a prefix of the answer: no word twice, none skipped.
    assert seen and seen[-1] == LONG_ANSWER and all(LONG_ANSWER.startswith(text) for text in seen), seen
    assert _stored_turns(site, session_id) == [("user", LONG), ("assistant", LONG_ANSWER)]
    assert [s["message_count"] for s in site.sessions()] == [2]
    assert stored(page, SESSION) == session_id
    assert page.evaluate("() => sessionStorage.length") == 0  # the answer's record is gone


def test_an_answer_goes_on_after_a_reload_in_the_middle(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    site = serve(delay=0.1)
    page = open_page(site)
    page.context.add_init_script(WATCH_ANSWER)
    ready(page)
    with page.expect_response("**/v1/chat/completions") as started:
        send(page, LONG)
    session_id = started.value.headers[SESSION_HEADER.lower()]
    before = _streamed_part_way(page)

    with page.expect_request(f"**{STREAM_PATH}?after=*") as resumed:
        page.reload()
    ready(page)
    # The reloaded page shows the pending turn with the text it had (chunk 0 is the
    # role, then one chunk a word), and goes on from the chunk after the last it shows.
    after = int(resumed.value.url.rpartition("after=")[2])
    first_shown = page.evaluate("() => window.__seen[0]")
    assert first_shown.startswith(before) and "w30" not in first_shown, (first_shown, before)
    assert after == 1 + len(first_shown.split()), (after, first_shown)
    _assert_answered_once(page, site, session_id)

    # Reloaded again, the page shows the stored conversation, and resumes nothing.
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.reload()
    ready(page)
    expect(page.locator(".message.assistant .body")).to_have_text([LONG_ANSWER])
    assert not any(STREAM_PATH in url for url in requests), requests
    assert started.value.request.headers.get("x-threadline-resumable") == "true"


def test_an_answer_goes_on_after_the_connection_drops(
    serve: Callable[..., Site], open_page: Callable[..., Page], cable: Callable[[Site], tuple[Site, Cable]]
) -> None:
    site, line = cable(serve(delay=0.1))
    page = open_page(site)
    page.context.add_init_script(WATCH_ANSWER)
    page.reload()  # so that the init script watches this page
    ready(page)
    resumes: list[str] = []
    page.on("request", lambda request: resumes.append(request.url) if STREAM_PATH in request.url else None)
    with page.expect_response("**/v1/chat/completions") as started:
        send(page, LONG)
    session_id = started.value.headers[SESSION_HEADER.lower()]
    _streamed_part_way(page)

    line.unplug()  # the connection drops mid-answer, and the page cannot reconnect
    expect(page.locator(".message.assistant .reconnecting")).to_be_visible()
    time.sleep(1.5)  # the answer goes on meanwhile, on the server; the page tries again
    assert "I was given" not in last_answer(page)
    line.plug()

    _assert_answered_once(page, site, session_id)
    assert resumes and all("after=" in url and not url.endswith("after=0") for url in resumes), resumes
    expect(page.locator(".message.assistant .reconnecting")).to_have_count(0)


def test_stop_on_a_resumable_answer_stops_the_model_and_keeps_nothing(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    site = serve(delay=0.1)
    page = open_page(site)
    ready(page)
    with page.expect_response("**/v1/chat/completions") as started:
        send(page, LONG)
    session_id = started.value.headers[SESSION_HEADER.lower()]
    _streamed_part_way(page)
    with page.expect_response(f"**/v1/sessions/{session_id}/stream/cancel") as cancelled:
        page.click("#stop")
    assert cancelled.value.status == 200 and cancelled.value.json()["status"] == "cancelled"
    expect(page.locator(".message.assistant .notice")).to_have_text(
        "Stopped. This turn was not saved to the conversation."
    )
    partial = last_answer(page)
    time.sleep(5)  # the whole answer would have been made by now
    assert last_answer(page) == partial  # the text stopped growing
    # The model was stopped: the answer stays cancelled and its turn was never stored.
    again = site.api("POST", f"/v1/sessions/{session_id}/stream/cancel")
    assert again.json()["status"] == "cancelled", again.text
    assert site.api("GET", f"/v1/sessions/{session_id}/messages").status_code == 404
    assert site.sessions() == []
    assert page.evaluate("() => sessionStorage.length") == 0
    assert stored(page, SESSION) is None

    # A resumed answer (after a reload) stops the same way.
    send(page, LONG)
    _streamed_part_way(page)
    page.reload()
    ready(page)
    expect(page.locator(".message.assistant.streaming")).to_have_count(1)
    page.press("#prompt", "Escape")  # the keyboard's Stop
    expect(page.locator(".message.assistant .notice")).to_have_text(
        "Stopped. This turn was not saved to the conversation."
    )
    partial = last_answer(page)
    time.sleep(5)
    assert last_answer(page) == partial and "I was given" not in partial
    assert site.sessions() == []


def test_opening_another_conversation_mid_answer_leaves_the_answer_running(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    site = serve(delay=0.1)
    site.say("an earlier chat", "earlier-chat")
    page = open_page(site)
    ready(page)
    with page.expect_response("**/v1/chat/completions") as started:
        send(page, LONG)
    session_id = started.value.headers[SESSION_HEADER.lower()]
    _streamed_part_way(page)
    open_session(page, "an earlier chat")
    expect(page.locator(".message.user .body")).to_have_text(["an earlier chat"])
    assert page.evaluate("() => sessionStorage.length") == 0  # a reload resumes nothing
    # Not stopped: the answer ends on the server and its turn is stored.
    deadline = time.monotonic() + WAIT_MS / 1000
    while site.api("GET", f"/v1/sessions/{session_id}/messages").status_code == 404:
        assert time.monotonic() < deadline, "the answer left behind was never stored"
        time.sleep(0.2)
    assert _stored_turns(site, session_id) == [("user", LONG), ("assistant", LONG_ANSWER)]
    page.reload()
    ready(page)
    expect(page.locator(".message.user .body")).to_have_text(["an earlier chat"])
    expect(page.locator(".message.assistant.streaming")).to_have_count(0)
    page.locator(f'.session[data-id="{session_id}"] .session-open').click()
    expect(page.locator(".message.assistant .body")).to_have_text([LONG_ANSWER])


def test_the_sidebar_opens_an_older_session_and_deletes_sessions(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    site = serve(delay=0)
    site.say("the older topic", "older-chat")
    site.say("more on it", "older-chat")
    site.say("the newer topic", "newer-chat")
    page = open_page(site)
    ready(page)
    titles = page.locator(".session-title")
    expect(titles).to_have_text(["the newer topic", "the older topic"])  # most recent first
    expect(page.locator(".message")).to_have_count(0)

    open_session(page, "the older topic")
    expect(page.locator(".message.user .body")).to_have_text(["the older topic", "more on it"])
    expect(page.locator(".message.assistant .body")).to_have_text(
        ["Echo: the older topic (I was given 1 message.)", "Echo: more on it (I was given 3 messages.)"]
    )
    assert stored(page, SESSION) == "older-chat"
    expect(page.locator(".session.current .session-title")).to_have_text("the older topic")

    send(page, "continuing")
    answered(page, 3)
    assert last_answer(page) == "Echo: continuing (I was given 5 messages.)"
    expect(titles).to_have_text(["the older topic", "the newer topic"])  # now the most recent

    # Deleting asks first; saying no keeps the session.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete “the newer topic”").click()
    expect(titles).to_have_count(2)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete “the newer topic”").click()
    expect(titles).to_have_text(["the older topic"])
    assert site.api("GET", "/v1/sessions/newer-chat/messages").status_code == 404
    expect(page.locator(".message")).to_have_count(6)  # the open conversation stays

    # Deleting the open conversation starts a new chat.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete “the older topic”").click()
    expect(titles).to_have_count(0)
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#sessions-status")).to_have_text("No conversations yet.")
    assert stored(page, SESSION) is None
    assert site.sessions() == []


def test_the_sidebar_shows_each_sessions_token_totals(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    site = serve(delay=0)
    site.say("an earlier chat", "earlier-chat")
    page = open_page(site)
    ready(page)
    # The echo model counts words: 3 in, 9 out ("Echo: an earlier chat (I was given 1 message.)").
    earlier = page.locator(".session", has=page.locator(".session-title", has_text="an earlier chat"))
    expect(earlier.locator(".session-usage")).to_have_text("1 turn · 3 tokens in · 9 out")

    send(page, "hello there")
    answered(page, 1)
    current = page.locator(".session.current")
    expect(current.locator(".session-usage")).to_have_text("1 turn · 2 tokens in · 8 out")
    send(page, "and again")
    answered(page, 2)
    # Turn 2's input is the window and the new message (2 + 8 + 2 words), its answer 8 words.
    [summary] = [s for s in site.sessions() if s["title"] == "hello there"]
    assert summary["usage"] == {"input_tokens": 14, "output_tokens": 16, "turns": 2}
    expect(current.locator(".session-usage")).to_have_text("2 turns · 14 tokens in · 16 out")


def test_untrusted_html_renders_as_text_and_markdown_renders_safely(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    site = serve(delay=0)
    page = open_page(site)
    ready(page)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    attack = (
        '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> [click](javascript:window.__pwned=3)'
    )
    send(page, attack)
    answered(page, 1)
    messages = page.locator("#messages")
    expect(page.locator(".message.user .body")).to_have_text(attack)
    expect(page.locator(".message.assistant .body")).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(page.locator(".message.assistant .body")).to_contain_text("<script>window.__pwned=2</script>")
    assert messages.locator("img, script, iframe, [onerror]").count() == 0
    assert messages.locator("a").count() == 0  # a javascript: link keeps only its text
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == []

    # Markdown: code blocks, lists, links, emphasis, quotes.
    send(
        page,
        "Here is **bold**, *italic* and `<b>code</b>`:\n\n```python\nprint('<i>hi</i>')\n```\n\n"
        "1. first\n2. second\n   - nested\n\n> quoted\n\n[docs](https://example.com/docs)",
    )
    answered(page, 2)
    body = page.locator(".message.assistant .body").last
    expect(body.locator("strong")).to_have_text("bold")
    expect(body.locator("em")).to_have_text("italic")
    expect(body.locator(":not(pre) > code")).to_have_text("<b>code</b>")
    expect(body.locator("pre code.language-python")).to_have_text("print('<i>hi</i>')")
    expect(body.locator("ol > li")).to_have_count(2)
    expect(body.locator("ol > li ul > li")).to_have_text(["nested"])
    expect(body.locator("blockquote")).to_have_text("quoted")
    link = body.locator("a")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")
    assert messages.locator("b, i").count() == 0

    # The renderer itself, case by case, then on a few thousand random inputs.
    cases = page.evaluate(
        """async (cases) => {
            const {renderMarkdown} = await import('./static/markdown.js');
            return cases.map((text) => {
                const box = document.createElement('div');
                box.append(renderMarkdown(text));
                return box.innerHTML;
            });
        }""",
        [source for source, _ in RENDER_CASES],
    )
    assert list(zip([source for source, _ in RENDER_CASES], cases, strict=True)) == RENDER_CASES
    report = page.evaluate(FUZZ_RENDERER)
    assert report == {"rendered": 3000, "problems": []}


A = 'target="_blank" rel="noopener noreferrer"'
RENDER_CASES = [
    (
        "**bold**, *em*, ~~gone~~ and `code`",
        "<p><strong>bold</strong>, <em>em</em>, <del>gone</del> and <code>code</code></p>",
    ),
    ("# Title\n\n### Smaller", "<h1>Title</h1><h3>Smaller</h3>"),
    ("line one\nline two", "<p>line one<br>line two</p>"),
    ("- a\n- b\n\nafter", "<ul><li>a</li><li>b</li></ul><p>after</p>"),
    ("1. a\n2. b\n   - c", "<ol><li>a</li><li>b<ul><li>c</li></ul></li></ol>"),
    ("3. three\n4. four", '<ol start="3"><li>three</li><li>four</li></ol>'),
    ("- a\n\n- b", "<ul><li><p>a</p></li><li><p>b</p></li></ul>"),
    (
        "```js\nif (a < b) alert('<b>');\n```",
        '<pre><code class="language-js" data-language="js">if (a &lt; b) alert(\'&lt;b&gt;\');</code></pre>',
    ),
    ("```\nstill streaming", "<pre><code>still streaming</code></pre>"),
    ("> quoted\n> more", "<blockquote><p>quoted<br>more</p></blockquote>"),
    ("---", "<hr>"),
    ("[site](https://example.com/a?b=1&c=2)", f'<p><a href="https://example.com/a?b=1&amp;c=2" {A}>site</a></p>'),
    ("[mail](mailto:someone@example.com)", f'<p><a href="mailto:someone@example.com" {A}>mail</a></p>'),
    ("[x](javascript:alert(1)) [y](JAVASCRIPT:alert(1)) [z](data:text/html,hi)", "<p>x y z</p>"),
    ("[relative](/v1/models)", "<p>relative</p>"),
    (
        "see https://example.com/path_(x). ok",
        f'<p>see <a href="https://example.com/path_(x)" {A}>https://example.com/path_(x)</a>. ok</p>',
    ),
    ("<https://example.com>", f'<p><a href="https://example.com/" {A}>https://example.com</a></p>'),
    ("![a cat](https://example.com/cat.png)", f'<p><a href="https://example.com/cat.png" {A}>🖼 a cat</a></p>'),
    ("<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"),
    ('<a href="javascript:alert(1)">x</a>', '<p>&lt;a href="javascript:alert(1)"&gt;x&lt;/a&gt;</p>'),
    ("snake_case_name and 2 * 3 * 4", "<p>snake_case_name and 2 * 3 * 4</p>"),
    ("\\*not emphasis\\* and \\<b>", "<p>*not emphasis* and &lt;b&gt;</p>"),
    ("***both***", "<p><strong><em>both</em></strong></p>"),
    ("**bold with *em* inside**", "<p><strong>bold with <em>em</em> inside</strong></p>"),
    ("`**not bold**`", "<p><code>**not bold**</code></p>"),
    (
        "| a | b |\n|---|--:|\n| 1 | 2 |",
        '<div class="table-scroll"><table><thead><tr><th>a</th><th class="align-right">b</th></tr></thead>'
        '<tbody><tr><td>1</td><td class="align-right">2</td></tr></tbody></table></div>',
    ),
]

# Random Markdown-ish text: the renderer must never throw, and must only ever make the
# elements and attributes it knows, with safe links.
FUZZ_RENDERER = """async () => {
    const {renderMarkdown} = await import('./static/markdown.js');
    const pieces = ['*', '**', '_', '__', '~~', '`', '```', '\\n', '\\n\\n', ' ', '#', '# ', '> ', '- ', '1. ',
        '   ', '[', ']', '(', ')', '](', '![', '<', '>', '|', '---', '\\\\', 'https://example.com/x',
        'javascript:alert(1)', '<img src=x onerror=alert(1)>', '<script>', 'word', 'text', '"', "'", 'é', '😀'];
    const tags = new Set(['P', 'BR', 'STRONG', 'EM', 'DEL', 'CODE', 'PRE', 'A', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6',
        'UL', 'OL', 'LI', 'BLOCKQUOTE', 'HR', 'TABLE', 'THEAD', 'TBODY', 'TR', 'TH', 'TD', 'DIV']);
    const attributes = new Set(['href', 'target', 'rel', 'title', 'start', 'class', 'data-language']);
    let seed = 12345;
    const random = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    const problems = [];
    let rendered = 0;
    for (let round = 0; round < 3000; round += 1) {
        let text = '';
        const length = 1 + random(40);
        for (let i = 0; i < length; i += 1) text += pieces[random(pieces.length)];
        let box;
        try {
            box = document.createElement('div');
            box.append(renderMarkdown(text));
        } catch (error) {
            problems.push(['threw', text, String(error)]);
            continue;
        }
        rendered += 1;
        for (const node of box.querySelectorAll('*')) {
            if (!tags.has(node.tagName)) problems.push(['tag', text, node.tagName]);
            for (const attribute of node.attributes) {
                if (!attributes.has(attribute.name)) problems.push(['attribute', text, attribute.name]);
            }
            if (node.tagName === 'A' && !/^(https?:|mailto:)/.test(node.getAttribute('href'))) {
                problems.push(['href', text, node.getAttribute('href')]);
            }
        }
        if (problems.length > 5) break;
    }
    return {rendered, problems};
}"""


def test_api_errors_show_in_the_conversation(serve: Callable[..., Site], open_page: Callable[..., Page]) -> None:
    site = serve(provider=TroubleProvider(delay_seconds=0.02))
    page = open_page(site)
    ready(page)

    # An error before the stream: an HTTP error with OpenAI's error body.
    send(page, "please refuse this")
    error = page.locator(".message.error")
    expect(error).to_have_count(1)
    expect(error).to_contain_text("The model provider is rate limiting requests; retry shortly.")
    expect(error).to_contain_text("HTTP 429")
    expect(error).to_contain_text("rate_limit_exceeded")
    expect(error).to_have_attribute("role", "alert")
    expect(page.locator("#prompt")).to_have_value("please refuse this")  # ready to retry
    expect(page.locator("#send")).to_be_visible()

    # An error in the middle of the stream: a `data: {"error": ...}` frame.
    send(page, "now break please")
    box = page.locator(".message.assistant .error-box")
    expect(box).to_contain_text("The model provider failed while answering.")
    expect(box).to_contain_text("provider_error")
    expect(page.locator(".message.assistant .body").last).to_contain_text("Partial answer")
    assert site.sessions() == []  # neither failed turn was stored

    # A session that no longer exists: the page says so and starts a new chat.
    page.evaluate("(name) => localStorage.setItem(name, 'gone-session')", SESSION)
    page.reload()
    ready(page)
    expect(page.locator(".notice")).to_have_text("That conversation is no longer available. This is a new chat.")
    assert stored(page, SESSION) is None
    send(page, "fine now")
    answered(page, 1)
    assert last_answer(page) == "Echo: fine now (I was given 1 message.)"


def test_the_api_key_is_asked_for_when_needed_kept_and_forgotten(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    site = serve(delay=0, api_keys=("sk-right-key",))
    page = open_page(site)
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()  # the API answered 401
    expect(page.locator("#key-reason")).to_have_text(
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
    )
    expect(page.locator("#key-input")).to_be_focused()

    page.fill("#key-input", "sk-wrong-key")
    page.click("#key-save")
    expect(page.locator("#key-reason")).to_have_text("Incorrect API key provided.")
    expect(dialog).to_be_visible()
    page.fill("#key-input", "sk-right-key")
    page.press("#key-input", "Enter")
    expect(dialog).to_be_hidden()
    ready(page)
    expect(page.locator("#model")).to_have_value("echo")
    assert stored(page, KEY) == "sk-right-key"
    expect(page.locator(".message.error")).to_have_count(0)

    send(page, "with a key")
    answered(page, 1)
    assert last_answer(page) == "Echo: with a key (I was given 1 message.)"
    assert [s["title"] for s in site.sessions()] == ["with a key"]

    # The key is kept: a reload asks for nothing.
    page.reload()
    ready(page)
    expect(dialog).to_be_hidden()
    expect(page.locator(".message.assistant .body")).to_have_text(["Echo: with a key (I was given 1 message.)"])

    # Forget it: it leaves localStorage, the conversation leaves the screen, and the
    # page asks again.
    page.click("#key-button")
    expect(page.locator("#key-state")).to_have_text("A key is saved in this browser.")
    page.click("#key-forget")
    assert stored(page, KEY) is None
    expect(page.locator(".message.assistant")).to_have_count(0)
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("You didn't provide an API key.")
    page.click("#key-cancel")
    expect(dialog).to_be_hidden()
    error = page.locator(".message.error")
    expect(error).to_contain_text("invalid_api_key")  # the refusal is shown, not swallowed
    expect(error).to_contain_text("HTTP 401")

    # Sending asks again; with the key the message goes through.
    send(page, "back again")
    expect(dialog).to_be_visible()
    page.fill("#key-input", "sk-right-key")
    page.click("#key-save")
    answered(page, 1)
    assert last_answer(page) == "Echo: back again (I was given 1 message.)"
    assert stored(page, KEY) == "sk-right-key"


def test_the_page_works_under_a_stage_path_as_deployed(
    serve: Callable[..., Site], open_page: Callable[..., Page]
) -> None:
    """Deployed, the page is API Gateway's `https://.../prod/`: its files and the API
    are reached relative to that, never from the host's root."""
    site = serve(delay=0, stage="/prod")
    assert site.url.endswith("/prod")
    page = open_page(site)
    paths: list[str] = []
    page.on("request", lambda request: paths.append(request.url.removeprefix(site.url)))
    page.reload()
    ready(page)
    expect(page.locator("#model")).to_have_value("echo")
    send(page, "staged")
    answered(page, 1)
    assert last_answer(page) == "Echo: staged (I was given 1 message.)"
    page.reload()
    ready(page)
    expect(page.locator(".message.assistant .body")).to_have_text(["Echo: staged (I was given 1 message.)"])
    assert {"/", "/static/app.js", "/static/markdown.js", "/static/style.css", "/v1/models"} <= {
        path.partition("?")[0] for path in paths
    }
    assert [path for path in paths if not path.startswith("/")] == []  # nothing outside /prod/


def _luminance(css: str) -> float:
    channels = [float(part) / 255 for part in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(first: str, second: str) -> float:
    high, low = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


COLOURS = """() => {
    const style = (selector) => getComputedStyle(document.querySelector(selector));
    const muted = document.createElement('span');
    muted.className = 'session-meta';
    document.body.append(muted);
    const colours = {
        background: style('body').backgroundColor,
        text: style('body').color,
        muted: getComputedStyle(muted).color,
        sendBackground: style('#send').backgroundColor,
        sendText: style('#send').color,
    };
    muted.remove();
    return colours;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_width_keyboard_and_readable_colours(
    serve: Callable[..., Site], open_page: Callable[..., Page], scheme: str
) -> None:
    site = serve(delay=0)
    site.say("an earlier chat", "earlier")
    page = open_page(site, width=375, height=700, scheme=scheme)
    ready(page)

    colours = page.evaluate(COLOURS)
    dark_background = _luminance(colours["background"]) < 0.2
    assert dark_background is (scheme == "dark"), colours
    assert _contrast(colours["background"], colours["text"]) >= 7, colours
    assert _contrast(colours["background"], colours["muted"]) >= 4.5, colours
    assert _contrast(colours["sendBackground"], colours["sendText"]) >= 4.5, colours

    # Phone width: nothing overflows sideways; the sessions are one tap away.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    sidebar = page.locator("#sidebar")
    expect(sidebar).to_be_hidden()
    for selector in ("#prompt", "#send", "#model", "#key-button", "#open-sidebar"):
        expect(page.locator(selector)).to_be_in_viewport()
    page.click("#open-sidebar")
    expect(sidebar).to_be_visible()
    expect(page.locator("#open-sidebar")).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    expect(page.locator("#open-sidebar")).to_be_focused()
    page.click("#open-sidebar")
    open_session(page, "an earlier chat")
    expect(sidebar).to_be_hidden()
    expect(page.locator(".message.user .body")).to_have_text(["an earlier chat"])

    # Keyboard: Shift+Enter adds a line, Enter sends.
    page.click("#open-sidebar")
    page.click("#new-chat")
    expect(page.locator("#prompt")).to_be_focused()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    expect(page.locator("#prompt")).to_have_value("first line\nsecond line")
    expect(page.locator(".message")).to_have_count(0)
    page.keyboard.press("Enter")
    answered(page, 1)
    expect(page.locator("#prompt")).to_have_value("")
    expect(page.locator(".message.user .body")).to_have_text(["first line\nsecond line"])
    assert last_answer(page) == "Echo: first line\nsecond line (I was given 1 message.)"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    page.keyboard.press("Tab")
    expect(page.locator("#send")).to_be_focused()
