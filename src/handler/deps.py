"""What route handlers need from the request: the caller (principal) and the services.

Routes in every router call these instead of reaching into app state themselves,
so how services are built (lazily, from the environment, or injected by tests)
stays in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request

from core.chat import ChatService, build_service
from core.errors import ApiError
from core.idempotency import IdempotencyGuard
from core.responses.service import ResponsesService
from core.settings import get_settings
from core.store.client import get_dynamodb_client

if TYPE_CHECKING:
    from core.background import Dispatcher
    from core.chat_streams import ResumableChat
    from core.conversations import ConversationsService
    from core.responses.recorded import RecordedResponses
    from core.resumable.recorder import RecordingPolicy
    from core.store.events import DynamoDBEventLog

OPEN_PRINCIPAL = "open"
"""The owner of everything while the service runs without API keys."""


def principal_of(request: Request) -> str:
    """The principal the auth middleware established for this request."""
    principal = getattr(request.state, "principal", None)
    if not principal:
        raise ApiError(401, "You didn't provide an API key.", code="invalid_api_key")
    return str(principal)


def chat_service(request: Request) -> ChatService:
    return app_chat_service(request.app)


def app_chat_service(app: Any) -> ChatService:
    services: dict[str, Any] = app.state.services
    if "chat" not in services:
        services["chat"] = build_service(get_settings())
    return services["chat"]  # type: ignore[no-any-return]


def idempotency_guard(request: Request) -> IdempotencyGuard:
    """Idempotency records live in the sessions table, next to what they protect."""
    services: dict[str, Any] = request.app.state.services
    if "idempotency" not in services:
        chat = chat_service(request)
        store: Any = chat.store
        services["idempotency"] = IdempotencyGuard(
            chat.settings.sessions_table,
            client=getattr(store, "client", None) or get_dynamodb_client(),
            ttl_seconds=chat.settings.idempotency_ttl_seconds,
            wait_seconds=chat.settings.idempotency_wait_seconds,
        )
    return services["idempotency"]  # type: ignore[no-any-return]


def responses_service(request: Request) -> ResponsesService:
    return app_responses_service(request.app)


def app_responses_service(app: Any) -> ResponsesService:
    """Built per request over the app's chat service (it holds no state of its own); the
    response store is DynamoDB's, on the chat service's table and client."""
    from core.store.responses import DynamoDBResponseStore

    chat = app_chat_service(app)
    return ResponsesService(chat, DynamoDBResponseStore(chat.store))  # type: ignore[arg-type]


def recording_policy(app: Any) -> RecordingPolicy:
    from core.resumable.recorder import RecordingPolicy

    settings = app_chat_service(app).settings
    return RecordingPolicy(
        flush_seconds=settings.stream_flush_ms / 1000,
        poll_seconds=settings.stream_poll_ms / 1000,
        lease_seconds=float(settings.run_lease_seconds),
    )


def event_log(app: Any) -> DynamoDBEventLog:
    from core.store.events import DynamoDBEventLog

    store: Any = app_chat_service(app).store
    return DynamoDBEventLog(store.client, store.table_name)


def dispatcher(app: Any) -> Dispatcher:
    """Where background jobs run: this process's loop, or an asynchronous invocation of
    this function (`BACKGROUND_DISPATCH`, `lambda` by default inside Lambda)."""
    services: dict[str, Any] = app.state.services
    if "dispatcher" not in services:
        if app_chat_service(app).settings.background_dispatch == "lambda":
            from core.background_lambda import LambdaDispatcher

            services["dispatcher"] = LambdaDispatcher.from_environment()
        else:
            from core.background import InProcessDispatcher
            from handler.jobs import run_job

            services["dispatcher"] = InProcessDispatcher(lambda job: run_job(app, job))
    return services["dispatcher"]  # type: ignore[no-any-return]


def recorded_responses(request: Request) -> RecordedResponses:
    return app_recorded_responses(request.app)


def app_recorded_responses(app: Any) -> RecordedResponses:
    from core.responses.recorded import RecordedResponses

    return RecordedResponses(app_responses_service(app), event_log(app), recording_policy(app), dispatcher(app))


def conversations_service(request: Request) -> ConversationsService:
    """The Conversations API over the same store (a conversation is a session)."""
    from core.conversations import ConversationsService
    from core.store.responses import DynamoDBResponseStore

    chat = chat_service(request)
    return ConversationsService(chat.store, DynamoDBResponseStore(chat.store))  # type: ignore[arg-type]


def resumable_chat(request: Request) -> ResumableChat:
    """Resumable chat answers, recorded in the sessions table beside their session."""
    from core.chat_streams import ResumableChat

    return ResumableChat(chat_service(request), event_log(request.app), recording_policy(request.app))
