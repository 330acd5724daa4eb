"""Recorded responses (issue 13): streams that outlive their client, background
responses, cancel, and `GET /v1/responses/{id}?stream=true&starting_after=N`.

A stored response that streams, or runs in the background, is a *run*
(`core.resumable`): its item (`RESPONSE#<owner>#<id>` / `RESPONSE`) is written when
it starts, with status `queued` or `in_progress`, and holds the run's state; its
events are recorded beside it in small batches. Its turn's transaction writes the
last batch (the terminal event included) and the final item, guarded by the run's
state, so a cancel that came first wins and nothing is stored.

- **Stored stream** (`stream: true`, `store` not false): runs in the request's own
  process; the client is a follower and may leave; the run goes on.
- **Background** (`background: true`): without `stream`, the response is queued and
  a job (`core.background`) runs it; with `stream`, it runs like a stored stream.
- **Cancel**: a background response that is queued or in progress ends `cancelled`
  (its worker's next write is refused, and it stops the model).
- **A worker that died** stops renewing its lease: the first reader after
  `lease_seconds` ends the response as `failed`. A queued response whose job never
  started ends `failed` after `queue_seconds`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from core import background
from core.errors import ApiError, bad_request, not_found, unavailable
from core.responses.wire import is_response_id, parse_create_request
from core.resumable import runs
from core.resumable.follow import follow
from core.resumable.recorder import Recorder, RecordingPolicy
from core.store.base import StoredResponse, StoreUnavailable
from core.store.events import DynamoDBEventLog, RunState, event_json
from core.store.keys import LogKey, response_log, response_pk, string_attr

if TYPE_CHECKING:
    from core.responses.service import PreparedResponse, ResponsesService

logger = logging.getLogger("threadline.responses.recorded")

CANCEL_WAIT_SECONDS = 10.0
"""How long a cancel waits for a running response to stop (its worker notices within
`flush_seconds` while the model streams, within a second while it is quiet)."""

QUEUE_SECONDS = 900.0
"""How long a background response may stay queued (its job not started) before a
reader ends it as failed: above the asynchronous invocation's maximum event age in
the template (MaximumEventAgeInSeconds: 600), so a job Lambda still holds is not
failed under it."""

DIED = "The response stopped before it finished: the process running it was interrupted. Nothing was stored."
NEVER_STARTED = "The background response was never started. Nothing was stored; create it again."


def new_worker_id() -> str:
    return "w_" + secrets.token_hex(8)


def _missing(response_id: str) -> ApiError:
    return not_found(f"No response found with id '{response_id[:128]}'.")


class RecordedResponses:
    def __init__(
        self,
        service: ResponsesService,
        log: DynamoDBEventLog,
        policy: RecordingPolicy,
        dispatcher: background.Dispatcher | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.log = log
        self.policy = policy
        self.dispatcher = dispatcher
        self.clock = clock

    # -- starting ---------------------------------------------------------------------

    async def start_stream(self, prepared: PreparedResponse) -> runs.Run:
        """Open the response's item (in progress, this process's run) and start the run."""
        worker = new_worker_id()
        await self._open(prepared, worker=worker, status="in_progress")
        return self._start(prepared, worker, keep_alive=True)

    async def queue(
        self, prepared: PreparedResponse, raw: dict[str, Any], session_header: str | None
    ) -> dict[str, Any]:
        """A background response without a stream: queued, and a job dispatched to run it."""
        if self.dispatcher is None:
            raise unavailable("Background responses are not available on this deployment.")
        await self._open(
            prepared,
            worker=None,
            status="queued",
            # The job prepares the request again: a session made for it keeps its id;
            # one it continues is found again (and a chain moved on since forks anew).
            request={
                "body": raw,
                "session_header": session_header,
                "session_id": prepared.session_id if prepared.mode in ("new", "fork") else None,
            },
        )
        try:
            await self.dispatcher.dispatch(background.response_job(prepared.owner, prepared.response_id))
        except Exception:
            logger.exception("could not dispatch a background response", extra={"response_id": prepared.response_id})
            await self._end_from_outside(
                prepared.owner, prepared.response_id, "failed", "The background response could not be started."
            )
            raise unavailable("The background response could not be started; retry the request.") from None
        return self.service.initial_body(prepared, "queued")

    async def _open(
        self, prepared: PreparedResponse, *, worker: str | None, status: str, request: dict[str, Any] | None = None
    ) -> None:
        assert prepared.key is not None
        body = self.service.initial_body(prepared, status)
        stored = StoredResponse(
            response_id=prepared.response_id,
            session_id=prepared.key.session_id,
            position=0,
            created_at=float(prepared.created_at),
            expires_at=prepared.expires_at,
            body=body,
            status=status,
            recorded=True,
            background=prepared.background,
        )
        lease = self.clock() + (QUEUE_SECONDS if worker is None else self.policy.lease_seconds)
        try:
            await self.service.store.open_response(  # type: ignore[attr-defined]
                prepared.owner, stored, worker=worker, lease_until=lease, request=request, link=not prepared.fresh
            )
        except StoreUnavailable:
            raise unavailable("The response could not be saved, so it was not started. Retry the request.") from None

    def _start(self, prepared: PreparedResponse, worker: str, *, keep_alive: bool) -> runs.Run:
        recorder = Recorder(
            self.log,
            self._key(prepared.owner, prepared.response_id),
            worker=worker,
            expires_at=prepared.expires_at,
            policy=self.policy,
            clock=self.clock,
        )
        prepared.recorder = recorder

        def on_cancel(seq: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            live = prepared.run
            body = live.cancelled_body() if live is not None else self.service.initial_body(prepared, "cancelled")
            terminal = {"type": "response.failed", "response": body, "sequence_number": seq}
            return [terminal], {"body": string_attr(event_json(body))}

        recorder.on_cancel = on_cancel

        def ending(last: dict[str, Any] | None) -> runs.Ending:
            if last is not None and last.get("type") in ("response.completed", "response.incomplete"):
                return None  # the turn's transaction recorded it
            body = (last or {}).get("response") or self.service.initial_body(prepared, "failed")
            status = str(body.get("status", "failed"))
            return status, {"body": string_attr(event_json(body))}

        return runs.start(
            self.service.stream(prepared),
            recorder,
            seq_of=lambda event: int(event["sequence_number"]),
            ending=ending,
            keep_alive=keep_alive,
        )

    async def run_job(self, owner: str, response_id: str) -> None:
        """The background job: claim the queued response, prepare it again (the request
        was checked when it was queued) and run it to its end."""
        key = self._key(owner, response_id)
        worker = new_worker_id()
        claimed = await anyio.to_thread.run_sync(
            lambda: self.log.claim(key, worker=worker, lease_until=self.clock() + self.policy.lease_seconds)
        )
        if claimed is None:
            await self._settle(owner, response_id)  # a retry after a worker died: end it now
            return
        request = await self.service.store.get_request(owner, response_id)  # type: ignore[attr-defined]
        if request is None:
            return  # deleted since the claim: nothing left to run or to end
        stored = await self.service.store.get_response(owner, response_id)
        try:
            prepared = await self.service.prepare(
                parse_create_request(request["body"]),
                owner=owner,
                session_header=request.get("session_header"),
                response_id=response_id,
                session_id=request.get("session_id"),
                created_at=int(stored.created_at) if stored is not None else None,
            )
        except ApiError as error:
            await self._end_run(key, worker, error)
            return
        run = self._start(prepared, worker, keep_alive=False)
        await run.wait()

    async def _end_run(self, key: LogKey, worker: str, error: ApiError) -> None:
        """A claimed job that cannot run (its request no longer fits the stored state)."""
        state = await anyio.to_thread.run_sync(self.log.get_state, key)
        if state is None or state.worker != worker:
            return
        await self._finish(key, state, "failed", error.message)

    # -- reading ----------------------------------------------------------------------

    async def retrieve(self, owner: str, response_id: str) -> StoredResponse:
        stored = await self.service.retrieve(owner, response_id)
        if stored.status in ("queued", "in_progress") and await self._settle(owner, response_id):
            stored = await self.service.retrieve(owner, response_id)
        return stored

    async def _settle(self, owner: str, response_id: str) -> bool:
        """End the run as failed if its lease lapsed; whether it did."""
        key = self._key(owner, response_id)
        state = await anyio.to_thread.run_sync(self.log.get_state, key)
        if state is None or not state.lapsed(self.clock()):
            return False
        return await self._end_lapsed(key, state)

    async def _end_lapsed(self, key: LogKey, state: RunState) -> bool:
        """A run whose worker is gone: cancelled if that was asked, else failed."""
        if state.cancel_requested:
            return await self._finish(key, state, "cancelled", None)
        return await self._finish(key, state, "failed", NEVER_STARTED if state.status == "queued" else DIED)

    async def stream(self, owner: str, response_id: str, after: int) -> AsyncIterator[tuple[int, str]]:
        """The response's events after sequence number `after`, then its live ones."""
        stored = await self.service.retrieve(owner, response_id)
        if not stored.recorded:
            raise bad_request(
                f"Response '{response_id[:128]}' was not streamed when it was created, so it has no events to "
                "stream: retrieve it without 'stream'.",
                param="stream",
                code="unsupported_parameter",
            )
        key = self._key(owner, response_id)

        async def on_lapsed(state: RunState) -> None:
            await self._end_lapsed(key, state)

        return follow(self.log, key, after, policy=self.policy, on_lapsed=on_lapsed, clock=self.clock)

    # -- cancel -----------------------------------------------------------------------

    async def cancel(self, owner: str, response_id: str) -> dict[str, Any]:
        """A queued response ends at once; a running one is asked to stop, and this waits
        (`CANCEL_WAIT_SECONDS` at most) for its worker to end it, or for its lease to
        lapse when the worker is gone."""
        if not is_response_id(response_id):
            raise _missing(response_id)
        key = self._key(owner, response_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        asked = False
        while True:
            stored = await self.retrieve(owner, response_id)
            if not stored.background:
                raise bad_request(
                    "Only background responses can be cancelled: this one was created without 'background'.",
                    param=None,
                )
            if stored.status == "cancelled":
                return stored.body
            if stored.status not in ("queued", "in_progress"):
                if asked:
                    return stored.body  # it finished before it saw the cancel
                raise bad_request(
                    f"Response '{response_id[:128]}' has already ended (status '{stored.status}'): only a queued or "
                    "in-progress response can be cancelled.",
                    param=None,
                )
            state = await anyio.to_thread.run_sync(self.log.get_state, key)
            if state is None:
                raise _missing(response_id)
            if state.status == "queued" or state.lapsed(self.clock()):
                await self._finish(key, state, "cancelled", None)
            elif state.cancel_requested:
                asked = True  # asked already (by another cancel): wait for the same end
            else:
                asked = await anyio.to_thread.run_sync(self.log.request_cancel, key, state) or asked
            if time.monotonic() > deadline:
                raise unavailable("The response did not stop in time; its cancel is recorded, retry to see it end.")
            await anyio.sleep(0.05 if not asked else self.policy.poll_seconds)

    # -- ending a run from outside it -----------------------------------------------------

    async def _finish(self, key: LogKey, state: RunState, status: str, message: str | None) -> bool:
        """End the run with `status` and a terminal event, unless it moved meanwhile."""
        body = json.loads(state.item["body"]["S"])
        body["status"] = status
        if message is not None:
            body["error"] = {"code": "server_error", "message": message}
        for item in body.get("output", []):
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
        terminal = {"type": "response.failed", "response": body, "sequence_number": state.last_seq + 1}
        expires = int(state.item["expires_at"]["N"]) if "expires_at" in state.item else None
        return await anyio.to_thread.run_sync(
            lambda: self.log.end(
                key,
                state,
                status=status,
                last_events=[(state.last_seq + 1, event_json(terminal))],
                expires_at=expires,
                attrs={"body": string_attr(event_json(body))},
            )
        )

    async def _end_from_outside(self, owner: str, response_id: str, status: str, message: str) -> None:
        key = self._key(owner, response_id)
        state = await anyio.to_thread.run_sync(self.log.get_state, key)
        if state is not None:
            await self._finish(key, state, status, message)

    @staticmethod
    def _key(owner: str, response_id: str) -> LogKey:
        return response_log(response_pk(owner, response_id))
