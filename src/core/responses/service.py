"""The Responses service: a chain of responses is a session.

A stored response names its session and its position (the session's `next_seq` right
after its turn), so continuing from it loads that session's history up to that
point; nothing copies the transcript into the response. What happens to the new
turn depends on where the response it continues from stands:

- **new** (no `previous_response_id`, or a `conversation` name not seen before): a new
  session with a random id holds the input and the reply.
- **append** (the response is its session's tip: `position == next_seq`): the turn is
  appended to that session with the chat store's conditional append. If a concurrent
  request on the same chain appends first, that turn legitimately wins and this one
  goes right after it (the store retries behind the winner); this response's
  position then covers both turns, so a later continuation of it sees both, in
  commit order. Nothing is lost and no turn is split.
- **fork** (an earlier response: `position < next_seq`): a new session whose first
  messages are a copy of the history the model saw (at most `HISTORY_WINDOW` messages
  before that position), then the new turn. The copy is bounded by the window, so
  storage stays linear in a chain's length however often it forks.
- **unstored** (`store: false`): the history is read the same way, nothing is written,
  and the id is not retrievable afterwards.

`instructions` apply to their request only (as in OpenAI, they do not carry over
through `previous_response_id`): they go first as a system message and are never
part of the stored turn. A session created by a response keeps them as its system
prompt, for clients that continue it through the chat API's session header.

The model runs through the chat service's provider and settings; the turn is stored
once the model has finished and before the client is told it is done. A failed model
call, or a client that disconnects mid-stream, stores nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from core.chat import ReplyBuilder, turn_usage
from core.compaction import after_turn_state, summary_message
from core.errors import ApiError, bad_request, internal_error, not_found, too_large, unavailable
from core.items import (
    ResponseItemId,
    StoredItemId,
    item_list,
    item_prefixes,
    parse_item_id,
    render,
    response_item_id,
)
from core.providers.base import ModelRequest, ProviderEvent, TextDelta, ToolCallDelta, run_to_end
from core.responses.items import echoed_parameters, input_messages, stored_reply
from core.responses.wire import (
    CreateResponseRequest,
    function_call_item,
    is_response_id,
    message_item,
    new_call_id,
    new_response_id,
    output_text_part,
    response_body,
    usage_body,
    validate_conversation_name,
)
from core.sessions import SESSION_HEADER, new_session_id, title_of, trim_window, validate_session_id
from core.store.base import (
    ChainHistory,
    ConversationPointer,
    NewTurn,
    RecordedCommit,
    ResponseStore,
    SessionKey,
    SessionState,
    StoredResponse,
    StoreUnavailable,
    TurnTooLarge,
)
from core.store.events import RunRevoked, event_json
from core.wire import now

if TYPE_CHECKING:
    from core.chat import ChatService
    from core.providers.base import ModelProvider
    from core.resumable.recorder import Recorder
    from core.settings import Settings
    from core.store.base import SessionStore

logger = logging.getLogger("threadline.responses")

Mode = Literal["new", "append", "fork", "unstored"]


@dataclass
class PreparedResponse:
    """Everything decided before the model runs; the face sends `session_id` at once."""

    response_id: str
    owner: str
    model: str
    model_request: ModelRequest
    mode: Mode
    key: SessionKey | None
    """The session the turn goes to; None when nothing is stored."""
    new_input: list[dict[str, Any]]
    carried: list[dict[str, Any]]
    """A fork's copy of the history it starts with; empty otherwise."""
    expected: SessionState | None
    """For an append: the head that was read (the version the conditional write expects)."""
    expires_at: int | None
    system: list[dict[str, Any]]
    echo: dict[str, Any]
    previous_response_id: str | None
    conversation: str | None
    fresh: bool = True
    """The session id was made for this request (nobody else can write it yet)."""
    retire: ConversationPointer | None = None
    """A conversation name of the earlier design whose chain this turn carries over: its
    pointer is deleted in the turn's transaction, so it is carried over only once."""
    created_at: int = field(default_factory=now)
    failure: ApiError | None = None
    """Set by `stream` when the response failed (the face may still answer with a status)."""
    background: bool = False
    run: Any = None
    """The response as it is being produced (set by `stream`): what a cancel ends with."""
    recorder: Recorder | None = None
    """The run's recorder when the response is recorded (`core.responses.recorded`)."""

    @property
    def stores(self) -> bool:
        return self.mode != "unstored"

    @property
    def session_id(self) -> str | None:
        return self.key.session_id if self.key is not None else None


def _missing_response(response_id: str, param: str | None = None) -> ApiError:
    return not_found(f"No response found with id '{response_id[:128]}'.", param=param)


@contextmanager
def _store_reads() -> Iterator[None]:
    """A chain that cannot be read is a 503: unlike a chat session header, the client
    named stored state, and we cannot even tell whether it is theirs."""
    try:
        yield
    except StoreUnavailable:
        logger.warning("response store unreadable")
        raise unavailable("The response store is unavailable right now; retry the request.") from None


@dataclass
class _Slot:
    """One output item as it is being produced."""

    kind: Literal["message", "function_call"]
    item_id: str
    status: str = "in_progress"
    pieces: list[str] = field(default_factory=list)
    tool_index: int = -1
    call_id: str = ""


class _Run:
    """One response being produced: provider events in; Responses stream events out
    (each with its `sequence_number`); the output items, reply and usage at the end.

    Items open lazily (a message when text arrives, a function call when a tool call
    starts) and each is closed when the next one opens, so events come in the
    official order: added, content part added, deltas, done events, item done.
    """

    def __init__(self, prepared: PreparedResponse) -> None:
        self.prepared = prepared
        self.reply = ReplyBuilder()
        self.slots: list[_Slot] = []
        self.open: int | None = None
        self.tool_slots: dict[int, int] = {}
        self.sequence = 0
        self._final: dict[str, Any] | None = None

    # -- events --------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return event

    def opening(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self.body("in_progress")),
            self._event("response.in_progress", response=self.body("in_progress")),
        ]

    def feed(self, event: ProviderEvent) -> list[dict[str, Any]]:
        self.reply.add(event)
        if isinstance(event, TextDelta):
            return self._text(event.text) if event.text else []
        if isinstance(event, ToolCallDelta):
            return self._tool_call(event)
        return []

    def _text(self, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.open is None or self.slots[self.open].kind != "message":
            events += self._open_message()
        index = self.open
        assert index is not None
        slot = self.slots[index]
        slot.pieces.append(text)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=slot.item_id,
                output_index=index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _open_message(self) -> list[dict[str, Any]]:
        events = self._close_open()
        slot = _Slot(kind="message", item_id=response_item_id("msg", self.prepared.response_id, len(self.slots)))
        self.slots.append(slot)
        self.open = index = len(self.slots) - 1
        events.append(self._event("response.output_item.added", output_index=index, item=self.render(slot)))
        events.append(
            self._event(
                "response.content_part.added",
                item_id=slot.item_id,
                output_index=index,
                content_index=0,
                part=output_text_part(""),
            )
        )
        return events

    def _tool_call(self, delta: ToolCallDelta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = self.tool_slots.get(delta.index)
        if index is None:
            events += self._close_open()
            slot = _Slot(
                kind="function_call",
                item_id=response_item_id("fc", self.prepared.response_id, len(self.slots)),
                tool_index=delta.index,
                call_id=delta.id or new_call_id(),
            )
            self.slots.append(slot)
            self.open = index = self.tool_slots[delta.index] = len(self.slots) - 1
            events.append(self._event("response.output_item.added", output_index=index, item=self.render(slot)))
        elif index != self.open:
            # A provider went back to a call it had left: its item is already done.
            # The arguments still reach the final output and the stored turn.
            logger.warning("tool call delta after its item was closed", extra={"tool_index": delta.index})
            return events
        if delta.arguments:
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=self.slots[index].item_id,
                    output_index=index,
                    delta=delta.arguments,
                )
            )
        return events

    def _close_open(self, status: str = "completed") -> list[dict[str, Any]]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        slot = self.slots[index]
        slot.status = status
        item = self.render(slot)
        if slot.kind == "message":
            text = "".join(slot.pieces)
            return [
                self._event(
                    "response.output_text.done",
                    item_id=slot.item_id,
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    item_id=slot.item_id,
                    output_index=index,
                    content_index=0,
                    part=output_text_part(text),
                ),
                self._event("response.output_item.done", output_index=index, item=item),
            ]
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=slot.item_id,
                name=item["name"],
                output_index=index,
                arguments=item["arguments"],
            ),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def closing(self) -> list[dict[str, Any]]:
        """After the model's last event: close the open item (an empty message if the
        model said nothing at all, so the output is never empty)."""
        events: list[dict[str, Any]] = []
        if not self.slots:
            events += self._open_message()
        status, _reason = self._outcome()
        events += self._close_open("incomplete" if status == "incomplete" else "completed")
        return events

    def terminal(self) -> dict[str, Any]:
        body = self.final_body()
        kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
        return self._event(kind, response=body)

    def cancelled_body(self) -> dict[str, Any]:
        """The Response as a cancel leaves it: its output so far, unfinished items incomplete."""
        for slot in self.slots:
            if slot.status == "in_progress":
                slot.status = "incomplete"
        return self.body("cancelled")

    def failed(self, error: ApiError) -> dict[str, Any]:
        if error.status == 429:
            code = "rate_limit_exceeded"
        elif error.status == 400:
            code = "invalid_prompt"
        else:
            code = "server_error"
        for slot in self.slots:
            if slot.status == "in_progress":
                slot.status = "incomplete"
        return self._event(
            "response.failed", response=self.body("failed", error={"code": code, "message": error.message})
        )

    # -- bodies --------------------------------------------------------------------

    def render(self, slot: _Slot) -> dict[str, Any]:
        if slot.kind == "message":
            text = None if slot.status == "in_progress" and not slot.pieces else "".join(slot.pieces)
            return message_item(slot.item_id, status=slot.status, text=text)
        call = self.reply.tool_calls.get(slot.tool_index, {"function": {"name": "", "arguments": ""}})
        return function_call_item(
            slot.item_id,
            call_id=slot.call_id,
            name=call["function"]["name"],
            arguments=call["function"]["arguments"] if slot.status != "in_progress" else "",
            status=slot.status,
        )

    def _outcome(self) -> tuple[str, str | None]:
        reason = self.reply.finish.reason
        if reason == "length":
            return "incomplete", "max_output_tokens"
        if reason == "content_filter":
            return "incomplete", "content_filter"
        return "completed", None

    def body(self, status: str, *, error: dict[str, str] | None = None) -> dict[str, Any]:
        prepared = self.prepared
        return response_body(
            response_id=prepared.response_id,
            created_at=prepared.created_at,
            model=prepared.model,
            status=status,
            output=[self.render(slot) for slot in self.slots],
            echo=prepared.echo,
            previous_response_id=prepared.previous_response_id,
            conversation=prepared.conversation,
            store=prepared.stores,
            background=prepared.background,
            error=error,
        )

    def final_body(self) -> dict[str, Any]:
        """The finished Response object (computed once: the stored and the sent body agree)."""
        if self._final is None:
            status, reason = self._outcome()
            usage = self.reply.finish.usage
            body = self.body(status)
            body["completed_at"] = now() if status == "completed" else None
            body["incomplete_details"] = {"reason": reason} if reason else None
            body["usage"] = usage_body(usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
            self._final = body
        return self._final

    def stored_message(self) -> dict[str, Any]:
        """The assistant message for the session, each tool call under the call id the
        client saw (the one its `function_call_output` will name)."""
        for slot in self.slots:
            if slot.kind == "function_call" and slot.tool_index in self.reply.tool_calls:
                self.reply.tool_calls[slot.tool_index]["id"] = slot.call_id
        return stored_reply(self.reply.message())

    def stored_ids(self, stored: dict[str, Any]) -> list[str]:
        """The output items' ids in the order the stored message shows its items (its
        message, then its tool calls), so every face shows them under the same ids."""
        messages = [slot.item_id for slot in self.slots if slot.kind == "message"]
        calls = [
            slot.item_id for slot in sorted(self.slots, key=lambda s: s.tool_index) if slot.kind == "function_call"
        ]
        ids = (messages[:1] if "msg" in item_prefixes(stored) else []) + calls
        return ids if len(ids) == len(item_prefixes(stored)) else []


class ResponsesService:
    """`POST/GET/DELETE /v1/responses` over the chat service's store, provider and settings."""

    def __init__(self, chat: ChatService, store: ResponseStore) -> None:
        self.chat = chat
        self.store = store

    def initial_body(self, prepared: PreparedResponse, status: str) -> dict[str, Any]:
        """The Response object before any output: what a queued or starting run shows."""
        return _Run(prepared).body(status)

    @property
    def sessions(self) -> SessionStore:
        return self.chat.store

    @property
    def provider(self) -> ModelProvider:
        return self.chat.provider

    @property
    def settings(self) -> Settings:
        return self.chat.settings

    # -- create --------------------------------------------------------------------

    async def prepare(
        self,
        request: CreateResponseRequest,
        *,
        owner: str,
        session_header: str | None = None,
        response_id: str | None = None,
        session_id: str | None = None,
        created_at: int | None = None,
    ) -> PreparedResponse:
        """Validate, read the chain the request continues (if any), decide where the
        turn goes. No model call yet, nothing written.

        The session a turn goes to is named by `previous_response_id`, by `conversation`
        (a conversation is a session: its id is the session id), or by the
        `X-Hermes-Session-Id` header, which means the same as `conversation`.

        A background job prepares its queued request again with the `response_id`,
        `session_id` (of a new session) and `created_at` decided when it was queued."""
        if request.background and not request.stores:
            raise bad_request(
                "Background responses must be stored: 'background' requires 'store' to be true (or left out).",
                param="background",
            )
        conversation = request.conversation_name
        if request.previous_response_id is not None and conversation is not None:
            raise bad_request(
                "Mutually exclusive parameters: provide only one of 'previous_response_id' or 'conversation'.",
                param="conversation",
                code="mutually_exclusive_parameters",
            )
        if conversation is not None:
            validate_conversation_name(conversation)
        named: str | None = None
        if session_header is not None:
            named = validate_session_id(session_header)
            if conversation is not None and conversation != named:
                raise bad_request(
                    f"'conversation' ({conversation}) and the {SESSION_HEADER} header ({named}) name different "
                    "sessions; send one of them, or the same id in both.",
                    param="conversation",
                    code="conflicting_session",
                )
            if request.previous_response_id is None:
                conversation = named
        model = self.chat.resolve_model(request.model)
        window = self.settings.history_window
        echo, options = echoed_parameters(request)

        chain: ChainHistory | None = None
        source: SessionKey | None = None
        state: SessionState | None = None
        retire: ConversationPointer | None = None
        if request.previous_response_id is not None:
            previous_id = request.previous_response_id
            if not is_response_id(previous_id):
                raise _missing_response(previous_id, "previous_response_id")
            with _store_reads():
                previous = await self.store.get_response(owner, previous_id)
                if previous is None:
                    raise _missing_response(previous_id, "previous_response_id")
                if previous.status not in ("completed", "incomplete"):
                    raise bad_request(
                        f"Response '{previous_id}' is {previous.status.replace('_', ' ')}: only a finished response "
                        "can be continued. Wait for it to complete (GET /v1/responses/{id}) and try again.",
                        param="previous_response_id",
                        code="previous_response_not_finished",
                    )
                source = SessionKey(owner=owner, session_id=previous.session_id)
                chain = await self.store.load_history(source, previous.position, window)
            if not chain.usable:  # its session was deleted or has expired
                raise _missing_response(previous_id, "previous_response_id")
            if named is not None and (previous.session_id != named or not chain.is_tip):
                raise bad_request(
                    f"previous_response_id '{previous_id}' is not the latest response of session '{named}' named "
                    f"by {SESSION_HEADER}: continuing it would start another session. Continue from the latest "
                    "response, or leave the header out.",
                    param="previous_response_id",
                    code="conflicting_session",
                )
        elif conversation is not None:
            source = SessionKey(owner=owner, session_id=conversation)
            with _store_reads():
                state = await self.sessions.load(source, window)
                if not state.exists:
                    retire, chain = await self._legacy_conversation(owner, conversation, window)

        reference_session = source
        new_input = input_messages(await self._resolve_references(request.input, owner, reference_session))

        history: list[dict[str, Any]]
        carried: list[dict[str, Any]] = []
        expected: SessionState | None = None
        key: SessionKey | None
        mode: Mode
        fresh = True
        summary = chain.summary if chain is not None else None
        if state is not None and source is not None:
            # A conversation: the session named, continued at its tip, or started under that id.
            history = trim_window(state.messages, cut=state.message_count > len(state.messages))
            summary = state.summary
            if chain is not None:  # a conversation name of the earlier design: carry its chain over once
                history = carried = trim_window(chain.messages, cut=chain.earlier)
                summary = None
            key, expected, fresh = source, state, False
            mode = "append" if state.exists else "new"
            expires_at = state.head.expires_at if state.exists and state.head else self.store.new_session_expiry()
        else:
            history = trim_window(chain.messages, cut=chain.earlier) if chain is not None else []
            if not request.stores:
                mode, key, expires_at = "unstored", None, None
            elif chain is not None and source is not None and chain.is_tip:
                mode, key = "append", source
                expected = SessionState(
                    head=chain.head, exists=True, summary=chain.summary, summary_version=chain.summary_version
                )
                fresh = False
                expires_at = chain.head.expires_at if chain.head is not None else None
            else:
                mode = "fork" if chain is not None else "new"
                key = SessionKey(owner=owner, session_id=session_id or new_session_id())
                carried = history
                expires_at = self.store.new_session_expiry()
        if not request.stores:
            mode, key, expires_at, carried = "unstored", None, None, []
        try:
            self.sessions.check_turn([*carried, *new_input], fresh_session=fresh)
        except TurnTooLarge as error:
            raise too_large(error.reason, param="input") from None

        system = [{"role": "system", "content": request.instructions}] if request.instructions else []
        prepared = PreparedResponse(
            response_id=response_id or new_response_id(),
            owner=owner,
            model=model,
            model_request=ModelRequest(
                model=self.settings.models[model],
                messages=[*system, *([summary_message(summary)] if summary else []), *history, *new_input],
                options=options,
            ),
            mode=mode,
            key=key,
            new_input=new_input,
            carried=carried,
            expected=expected,
            expires_at=expires_at,
            system=system,
            echo=echo,
            previous_response_id=request.previous_response_id,
            conversation=conversation,
            fresh=fresh,
            retire=retire if chain is not None and request.stores else None,
            background=bool(request.background),
        )
        if created_at is not None:
            prepared.created_at = created_at
        return prepared

    async def _legacy_conversation(
        self, owner: str, name: str, window: int
    ) -> tuple[ConversationPointer | None, ChainHistory | None]:
        """A conversation name given before conversations were sessions pointed at the
        latest response of a chain: the pointer and its history, to carry into the
        session of that name."""
        pointer = await self.store.get_conversation(owner, name)
        if pointer is None:
            return None, None
        chain = await self.store.load_history(
            SessionKey(owner=owner, session_id=pointer.session_id), pointer.position, window
        )
        return (pointer, chain) if chain.usable else (None, None)

    async def _resolve_references(
        self, raw: str | list[Any] | None, owner: str, session: SessionKey | None
    ) -> str | list[Any] | None:
        """`input` with each `item_reference` replaced by the caller's own item it names:
        an output item of one of their stored responses (one read per response), or an
        item of the session the request continues. Another owner's id, or an unknown
        one, is a 404 naming it."""
        if not isinstance(raw, list):
            return raw
        wanted = {
            index: item.get("id")
            for index, item in enumerate(raw)
            if isinstance(item, dict) and item.get("type") == "item_reference"
        }
        if not wanted:
            return raw
        resolved = list(raw)
        responses: dict[str, StoredResponse | None] = {}
        for index, item_id in wanted.items():
            where = f"input[{index}].id"
            if not isinstance(item_id, str):
                raise bad_request(f"Invalid value for '{where}': expected a string.", param=where, code="invalid_value")
            found = await self._find_item(item_id, owner, session, responses)
            if found is None:
                raise not_found(f"Item with id '{item_id[:128]}' not found.", param=where)
            resolved[index] = found
        return resolved

    async def _find_item(
        self, item_id: str, owner: str, session: SessionKey | None, responses: dict[str, StoredResponse | None]
    ) -> dict[str, Any] | None:
        where = parse_item_id(item_id)
        with _store_reads():
            if isinstance(where, ResponseItemId):
                if where.response_id not in responses:
                    responses[where.response_id] = await self.store.get_response(owner, where.response_id)
                stored = responses[where.response_id]
                output = stored.body.get("output", []) if stored is not None else []
                if where.output_index < len(output) and output[where.output_index].get("id") == item_id:
                    return dict(output[where.output_index])
                if stored is not None or session is None:
                    return None
                # The response was deleted: its output items are still its session's.
                found_message = await self.sessions.find_message(session, item_id)
                for item in render(found_message.message, found_message.item_ids) if found_message else []:
                    if item["id"] == item_id:
                        return item
                return None
            if isinstance(where, StoredItemId) and session is not None:
                found = await self.sessions.get_messages(session, [where.seq])
                stored_message = (found or {}).get(where.seq)
                if stored_message is not None:
                    for item in render(stored_message.message, stored_message.item_ids):
                        if item["id"] == item_id:
                            return item
        return None

    async def complete(self, prepared: PreparedResponse) -> dict[str, Any]:
        """The buffered answer: run the model to the end, store, return the Response."""
        run = _Run(prepared)
        async for event in run_to_end(self.provider, prepared.model_request):
            run.feed(event)
        run.closing()
        await self._commit(prepared, run)
        return run.final_body()

    async def stream(self, prepared: PreparedResponse) -> AsyncIterator[dict[str, Any]]:
        """The streamed answer as Responses events, `response.created` first and
        `response.completed` (or `.incomplete`) last, once the turn is stored. A
        failure ends the stream with `response.failed` and stores nothing; it is also
        left in `prepared.failure`, so a face that has not sent anything yet can
        answer with a plain HTTP error instead."""
        run = _Run(prepared)
        prepared.run = run
        for event in run.opening():
            yield event
        try:
            async for model_event in self.provider.stream(prepared.model_request):
                for event in run.feed(model_event):
                    yield event
            for event in run.closing():
                yield event
            before_terminal = run.sequence
            terminal = run.terminal()
            try:
                await self._commit(prepared, run, terminal)
            except BaseException:
                run.sequence = before_terminal  # the terminal event was never sent
                raise
        except RunRevoked:
            if prepared.recorder is not None:
                await prepared.recorder.refused()  # cancelled first: nothing stored, the run ends
            return
        except ApiError as error:
            prepared.failure = error
            yield run.failed(error)
            return
        except Exception:
            logger.exception("response failed", extra={"response_id": prepared.response_id})
            prepared.failure = internal_error()
            yield run.failed(prepared.failure)
            return
        yield terminal

    async def _commit(self, prepared: PreparedResponse, run: _Run, terminal: dict[str, Any] | None = None) -> None:
        """Store the turn and the response item in one transaction (the turn decides the
        position the response stands for). A failure stores neither, so the client's retry
        leaves exactly one copy; an answer lost after the commit is recognised by the
        store and not reported as a failure.
        """
        if not prepared.stores or prepared.key is None:
            return
        body = run.final_body()
        try:
            self.store.check_response(body)
            reply = run.stored_message()
            turn = NewTurn(
                messages=[*prepared.carried, *prepared.new_input, reply],
                system=prepared.system,
                title=title_of([*prepared.carried, *prepared.new_input]),
                item_ids=[*([[]] * (len(prepared.carried) + len(prepared.new_input))), run.stored_ids(reply)],
                usage=turn_usage(run.reply.finish.usage),
            )
            response = StoredResponse(
                response_id=prepared.response_id,
                session_id=prepared.key.session_id,
                position=0,  # decided by the append
                created_at=float(prepared.created_at),
                expires_at=prepared.expires_at,
                body=body,
                input_count=len(prepared.new_input),
                status=str(body["status"]),
                recorded=prepared.recorder is not None,
                background=prepared.background,
            )
            recorder = prepared.recorder
            if recorder is None:
                result, _stored = await self.store.append_response(
                    prepared.key,
                    turn,
                    prepared.expected,
                    fresh_session=prepared.fresh,
                    response=response,
                    retire=prepared.retire,
                )
            else:
                async with recorder.committing() as pending:
                    last = [*pending, *([(terminal["sequence_number"], event_json(terminal))] if terminal else [])]
                    result, _stored = await self.store.append_response(
                        prepared.key,
                        turn,
                        prepared.expected,
                        fresh_session=prepared.fresh,
                        response=response,
                        retire=prepared.retire,
                        recorded=RecordedCommit(worker=recorder.worker, events=last),
                    )
                    recorder.committed(last[-1][0] if last else recorder.recorded)
            self.chat.compactor.after_turn(
                prepared.key, after_turn_state(prepared.expected, result.first_seq, len(turn.messages)), prepared.model
            )
            if result.conflicts:
                logger.info(
                    "response appended after concurrent turns",
                    extra={"session_id": prepared.key.session_id, "conflicts": result.conflicts},
                )
        except TurnTooLarge as error:
            raise ApiError(413, error.reason + " Nothing was stored.", code="request_too_large") from None
        except StoreUnavailable:
            logger.error("could not store a response", extra={"response_id": prepared.response_id})
            raise unavailable("The response could not be saved, so nothing was stored. Retry the request.") from None

    # -- retrieve and delete --------------------------------------------------------

    async def retrieve(self, owner: str, response_id: str) -> StoredResponse:
        if not is_response_id(response_id):
            raise _missing_response(response_id)
        with _store_reads():
            stored = await self.store.get_response(owner, response_id)
        if stored is None:
            raise _missing_response(response_id)
        return stored

    async def input_items(
        self, owner: str, response_id: str, *, limit: int, order: str, after: str | None
    ) -> dict[str, Any]:
        """The items the response's request gave as input (not the history before them),
        as the session keeps them: its turn's messages before the reply."""
        stored = await self.retrieve(owner, response_id)
        items: list[dict[str, Any]] = []
        if stored.input_count:
            key = SessionKey(owner=owner, session_id=stored.session_id)
            last = stored.position - 1  # the reply
            with _store_reads():
                found = await self.sessions.get_messages(key, list(range(last - stored.input_count, last))) or {}
            items = [item for seq in sorted(found) for item in render(found[seq].message, found[seq].item_ids)]
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return item_list(items[:limit], has_more=len(items) > limit)

    async def delete(self, owner: str, response_id: str) -> dict[str, Any]:
        """Forget a stored response: one conditional delete of its item. Its turn stays in
        the session (later responses of the chain stand on it)."""
        if not is_response_id(response_id):
            raise _missing_response(response_id)
        with _store_reads():
            deleted = await self.store.delete_response(owner, response_id)
        if not deleted:
            raise _missing_response(response_id)
        return {"id": response_id, "object": "response", "deleted": True}
