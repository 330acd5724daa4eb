"""The chat service: resolve the session, load its window, run the model, append the turn.

One code path serves streamed and buffered answers: both consume the provider's
event stream; the turn is appended once the model has finished and before the
client is told it is done, so a client that saw the end of an answer can continue
the session at once. A failed model call stores nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core import telemetry
from core.compaction import Compactor, after_turn_state, summary_message
from core.errors import ApiError, not_found, too_large, unavailable
from core.providers.base import (
    PASSTHROUGH_OPTIONS,
    Finish,
    ModelProvider,
    ModelRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
    run_to_end,
)
from core.sessions import (
    new_session_id,
    split_continuation,
    split_stateless,
    title_of,
    trim_window,
    validate_session_id,
)
from core.settings import Settings
from core.store.base import (
    NewTurn,
    RunGuard,
    SessionKey,
    SessionState,
    SessionStore,
    StoreUnavailable,
    TurnTooLarge,
    TurnUsage,
)
from core.store.events import RunRevoked
from core.wire import (
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    new_completion_id,
    now,
    usage_body,
    usage_chunk_body,
)

if TYPE_CHECKING:
    from core.resumable.recorder import Recorder

logger = logging.getLogger("threadline.chat")


@dataclass
class PreparedTurn:
    """Everything decided before the model runs; the face sends `session_id` at once."""

    session_id: str
    key: SessionKey
    fresh_session: bool
    model: str
    model_request: ModelRequest
    new_input: list[dict[str, Any]]
    system: list[dict[str, Any]]
    state: SessionState | None
    include_usage: bool
    completion_id: str = field(default_factory=new_completion_id)
    created: int = field(default_factory=now)
    recorder: Recorder | None = None
    """The run's recorder when the answer is recorded (`core.chat_streams`): the turn is
    stored only while the run is still its worker's, and a cancel that came first wins."""


class ReplyBuilder:
    """Assembles the assistant message from provider events."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish = Finish()

    def add(self, event: TextDelta | ToolCallDelta | Finish) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self.tool_calls.setdefault(
                event.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if event.id:
                call["id"] = event.id
            if event.name:
                call["function"]["name"] += event.name
            call["function"]["arguments"] += event.arguments
        else:
            self.finish = event

    def message(self) -> dict[str, Any]:
        reply: dict[str, Any] = {"role": "assistant", "content": "".join(self.text)}
        if self.tool_calls:
            reply["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
            if not reply["content"]:
                reply["content"] = None
        return reply

    def usage(self) -> dict[str, int]:
        usage = self.finish.usage
        return usage_body(usage.prompt_tokens, usage.completion_tokens) if usage else usage_body(0, 0)


class ChatService:
    def __init__(self, store: SessionStore, provider: ModelProvider, settings: Settings) -> None:
        self.store = store
        self.provider = provider
        self.settings = settings
        self.compactor = Compactor(store, provider, settings)

    async def prepare(self, request: ChatCompletionRequest, *, session_header: str | None, owner: str) -> PreparedTurn:
        """Apply the session rules; read the session where there is one. No model call yet."""
        continuing = session_header is not None
        session_id = validate_session_id(session_header) if session_header is not None else new_session_id()
        model = self.resolve_model(request.model)
        telemetry.note(model=model, session_id=session_id, stream=bool(request.stream))
        split = split_continuation(request.messages) if continuing else split_stateless(request.messages)
        try:
            self.store.check_turn(split.new_input, fresh_session=not continuing, system=split.system)
        except TurnTooLarge as error:
            raise too_large(error.reason, param="messages") from None

        key = SessionKey(owner=owner, session_id=session_id)
        state: SessionState | None = None
        if continuing:
            state = await self._load(key)
            history = (state or SessionState()).messages
            cut = state is not None and state.message_count > len(history)
            system = split.system or (state.system if state else [])
            summary = [summary_message(state.summary)] if state is not None and state.summary is not None else []
            messages = [*system, *summary, *trim_window(history, cut=cut), *split.new_input]
        else:
            messages = [m.stored() for m in request.messages]

        options = {name: getattr(request, name) for name in PASSTHROUGH_OPTIONS if getattr(request, name) is not None}
        return PreparedTurn(
            session_id=session_id,
            key=key,
            fresh_session=not continuing,
            model=model,
            model_request=ModelRequest(model=self.settings.models[model], messages=messages, options=options),
            new_input=split.new_input,
            system=split.system,
            state=state,
            include_usage=request.wants_usage_chunk,
        )

    async def complete(self, turn: PreparedTurn) -> dict[str, Any]:
        """The buffered answer: run the model to the end, append the turn, return the body."""
        reply = ReplyBuilder()
        async for event in run_to_end(self.provider, turn.model_request):
            telemetry.first_token()
            reply.add(event)
        await self._commit(turn, reply.message(), reply.finish.usage)
        return completion_body(
            completion_id=turn.completion_id,
            created=turn.created,
            model=turn.model,
            message=reply.message(),
            finish_reason=reply.finish.reason,
            usage=reply.usage(),
        )

    async def stream(self, turn: PreparedTurn) -> AsyncIterator[dict[str, Any]]:
        """The streamed answer as chunk bodies; an `ApiError` raised here after the first
        chunk is the face's cue to send an error frame."""
        reply = ReplyBuilder()
        yield self._chunk(turn, {"role": "assistant", "content": ""})
        async for event in self.provider.stream(turn.model_request):
            telemetry.first_token()
            reply.add(event)
            if isinstance(event, TextDelta):
                if event.text:
                    yield self._chunk(turn, {"content": event.text})
            elif isinstance(event, ToolCallDelta):
                yield self._chunk(turn, {"tool_calls": [_tool_call_chunk(event)]})
        try:
            await self._commit(turn, reply.message(), reply.finish.usage)
        except RunRevoked:
            if turn.recorder is not None:
                await turn.recorder.refused()  # cancelled first: nothing stored, the run ends
            return
        yield self._chunk(turn, {}, finish_reason=reply.finish.reason)
        if turn.include_usage:
            yield usage_chunk_body(
                completion_id=turn.completion_id, created=turn.created, model=turn.model, usage=reply.usage()
            )

    def model_ids(self) -> list[str]:
        return list(self.settings.models)

    # -- internals -----------------------------------------------------------------

    def resolve_model(self, requested: str | None) -> str:
        if not requested:
            return self.settings.default_model
        if requested not in self.settings.models:
            raise not_found(
                f"The model `{requested}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return requested

    async def _load(self, key: SessionKey) -> SessionState | None:
        """Rule 7: a store that cannot be read gives empty history, with a warning."""
        started = time.perf_counter()
        try:
            return await self.store.load(key, self.settings.history_window)
        except StoreUnavailable:
            telemetry.add(store_fallbacks=1)
            logger.warning(
                "session store unreadable for session %s; continuing with empty history",
                key.session_id,
                extra={"session_id": key.session_id},
            )
            return None
        finally:
            telemetry.add(store_ms=_ms_since(started), store_calls=1)

    async def _commit(self, turn: PreparedTurn, reply: dict[str, Any], usage: Usage | None = None) -> None:
        if usage is not None:
            telemetry.note(tokens_in=usage.prompt_tokens, tokens_out=usage.completion_tokens)
        new_turn = NewTurn(
            messages=[*turn.new_input, _storable(reply)],
            system=turn.system,
            title=title_of(turn.new_input),
            usage=turn_usage(usage),
        )
        started = time.perf_counter()
        try:
            if turn.recorder is None:
                result = await self.store.append(turn.key, new_turn, turn.state, fresh_session=turn.fresh_session)
            else:
                async with turn.recorder.committing():
                    key = turn.recorder.key
                    result = await self.store.append(
                        turn.key,
                        new_turn,
                        turn.state,
                        fresh_session=turn.fresh_session,
                        run_guard=RunGuard(pk=key.pk, state_sk=key.state_sk, worker=turn.recorder.worker),
                    )
                    turn.recorder.reached_end = True  # stored: a cancel from now on is too late
        except TurnTooLarge as error:
            raise ApiError(413, error.reason + " Nothing was stored.", code="request_too_large") from None
        except StoreUnavailable:
            logger.error("could not store a turn of session %s", turn.session_id, extra={"session_id": turn.session_id})
            raise unavailable(
                "The conversation could not be saved, so nothing was stored. Retry the request."
            ) from None
        finally:
            telemetry.add(store_ms=_ms_since(started), store_calls=1)
        telemetry.add(conflicts=result.conflicts)
        self.compactor.after_turn(
            turn.key, after_turn_state(turn.state, result.first_seq, len(new_turn.messages)), turn.model
        )
        if result.conflicts:
            logger.info(
                "turn appended after concurrent turns",
                extra={"session_id": turn.session_id, "conflicts": result.conflicts},
            )

    @staticmethod
    def _chunk(turn: PreparedTurn, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return chunk_body(
            completion_id=turn.completion_id,
            created=turn.created,
            model=turn.model,
            delta=delta,
            finish_reason=finish_reason,
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def turn_usage(usage: Usage | None) -> TurnUsage:
    """What a model turn adds to its session's totals: the provider's count, or zero
    tokens (still a turn) when the provider reported none."""
    if usage is None:
        return TurnUsage()
    return TurnUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)


def _storable(reply: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in reply.items() if value is not None}


def _tool_call_chunk(event: ToolCallDelta) -> dict[str, Any]:
    chunk: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
    if event.id:
        chunk["id"] = event.id
        chunk["type"] = "function"
    if event.name:
        chunk["function"]["name"] = event.name
    return chunk


def build_service(settings: Settings) -> ChatService:
    """The service as configured: the DynamoDB store and the chosen provider."""
    from core.providers import create_provider
    from core.store.dynamodb import DynamoDBSessionStore

    store = DynamoDBSessionStore(
        settings.sessions_table,
        ttl_days=settings.session_ttl_days,
        listing_shards=settings.listing_shards,
        listing_interval=settings.listing_interval_seconds,
    )
    return ChatService(store, create_provider(settings), settings)
