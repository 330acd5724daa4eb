"""The FastAPI app: routes, request parsing, and errors in OpenAI's shape.

Thin on purpose: every decision about sessions and models is in `core.chat`; this
module turns HTTP into calls on the service and the service's answers into HTTP.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import telemetry
from core.chat import ChatService
from core.errors import ApiError, not_found, unavailable, validation_error
from core.sessions import RESUMABLE_HEADER, SESSION_HEADER, wants_resumable
from core.settings import Settings, get_settings
from core.sse import KEEPALIVE_SECONDS, open_chat_stream
from core.store.base import StoreUnavailable
from core.wire import ChatCompletionRequest, models_body
from handler import answers
from handler.after_response import AfterResponseMiddleware
from handler.auth import AuthMiddleware, KeyRing, check_startup
from handler.conversations_api import router as conversations_router
from handler.cors import CorsMiddleware
from handler.deps import chat_service, principal_of, resumable_chat
from handler.middleware import BodyLimitMiddleware, ErrorShieldMiddleware
from handler.observability import TelemetryMiddleware
from handler.page import router as page_router
from handler.parsing import json_body, json_object, parse, path_param, path_parameters
from handler.responses_api import router as responses_router
from handler.sessions_api import router as sessions_router

logger = logging.getLogger("threadline.app")

_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def create_app(
    service: ChatService | None = None,
    *,
    settings: Settings | None = None,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    keyring: KeyRing | None = None,
) -> FastAPI:
    """The app; the service is built from the environment on first use unless given.

    `settings` (default: the environment's) decide auth and CORS; inside Lambda the
    app refuses to be created without API keys, and anywhere with an invalid `API_KEYS`
    (`KeyConfigError`). `keyring` replaces the one built from `settings` (tests give
    theirs a clock).
    """
    settings = settings or (service.settings if service is not None else get_settings())
    check_startup(settings)
    keyring = keyring or KeyRing(settings)
    app = FastAPI(title="Threadline", version="0.1.0", summary="OpenAI-compatible chat with server-side sessions")
    started = int(time.time())
    app.state.services = {"chat": service} if service is not None else {}
    app.state.keepalive_seconds = keepalive_seconds

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        telemetry.note(error_code=error.code or str(error.status))
        return JSONResponse(error.body(), status_code=error.status, headers=getattr(error, "headers", None))

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, error: StoreUnavailable) -> JSONResponse:
        logger.error("session store unavailable", exc_info=error)
        api = unavailable("The session store is unavailable right now; retry the request.")
        telemetry.note(error_code=api.code)
        return JSONResponse(api.body(), status_code=api.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif error.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail) if isinstance(error.detail, str) else "Request failed"
        api = ApiError(error.status_code, message, code=_STATUS_CODES.get(error.status_code))
        telemetry.note(error_code=api.code or str(api.status))
        return JSONResponse(api.body(), status_code=api.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        api = validation_error(error.errors())
        telemetry.note(error_code=api.code)
        return JSONResponse(api.body(), status_code=api.status)

    @app.post("/v1/chat/completions", response_model=None, openapi_extra=json_body(ChatCompletionRequest))
    async def chat_completions(request: Request) -> Response:
        body = await json_object(request)
        chat_request = parse(ChatCompletionRequest, body)
        chat = chat_service(request)
        owner = principal_of(request)
        session_header = request.headers.get(SESSION_HEADER)

        async def answer() -> answers.Answer:
            turn = await chat.prepare(chat_request, session_header=session_header, owner=owner)
            try:
                return turn.session_id, await chat.complete(turn)
            except ApiError as error:
                raise answers.with_session_header(error, turn.session_id) from None

        if not chat_request.stream:
            return await answers.buffered(request, owner=owner, body=body, answer=answer)
        resumable = wants_resumable(request.headers.get(RESUMABLE_HEADER))
        turn = await chat.prepare(chat_request, session_header=session_header, owner=owner)
        if not resumable:
            # A plain stream: it ends (and the model call with it) when its client leaves.
            return await answers.streamed(
                request, session_id=turn.session_id, opening=open_chat_stream(chat.stream(turn), keepalive_seconds)
            )
        # Recorded: it runs on when its client leaves, who resumes it by session id.
        from core.chat_streams import open_frames  # only where used: cold starts never load it

        started = await resumable_chat(request).start(turn)
        events = started.run.recorder.broadcast.follow(-1)
        return await answers.streamed(
            request, session_id=turn.session_id, opening=open_frames(events, started.failure, keepalive_seconds)
        )

    @app.get("/v1/models", response_model=None)
    async def list_models(request: Request) -> dict[str, Any]:
        return models_body(chat_service(request).model_ids(), owned_by="threadline", created=started)

    @app.get("/v1/models/{model}", response_model=None, openapi_extra=path_parameters("model"))
    async def retrieve_model(request: Request) -> dict[str, Any]:
        model = path_param(request, "model")
        if model not in chat_service(request).model_ids():
            raise not_found(
                f"The model `{model[:128]}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return {"id": model, "object": "model", "created": started, "owned_by": "threadline"}

    @app.get("/health", response_model=None)
    @app.get("/v1/health", response_model=None)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(page_router)

    app.include_router(sessions_router)
    app.include_router(responses_router)
    app.include_router(conversations_router)

    # Outermost last: CORS (preflights never need a key), the error shield, auth,
    # then the body limit, so unauthenticated clients cannot make us read 1 MB; work
    # after the response (compaction) innermost, inside the request's telemetry.
    app.add_middleware(AfterResponseMiddleware)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AuthMiddleware, keyring=keyring)
    app.add_middleware(ErrorShieldMiddleware)
    if settings.telemetry:
        app.add_middleware(TelemetryMiddleware)
    app.add_middleware(CorsMiddleware, origins=settings.cors_origins)
    return app


app = create_app()
