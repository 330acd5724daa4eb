"""The Responses API: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`
(`POST /v1/responses/compact` is refused with a 400 that says what to do instead).

Thin like the chat route: the chain rules are in `core.responses.service`. Every
lookup is keyed by the caller's principal, so another principal's response id gets
the same 404 as an id that never existed. `X-Hermes-Session-Id` names the session a
stored response belongs to (absent with `store: false`, where nothing is kept).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from core.errors import ApiError, bad_request
from core.responses.sse import open_recorded_stream, open_response_stream, replay_frames
from core.responses.wire import CreateResponseRequest, parse_create_request
from core.sessions import SESSION_HEADER
from core.sse import KEEPALIVE_SECONDS
from handler import answers
from handler.deps import principal_of, recorded_responses, responses_service
from handler.parsing import json_body, json_object, path_param, path_parameters, small_int

router = APIRouter()

_RETRIEVE_PARAMETERS: dict[str, Any] = {
    "parameters": [
        *path_parameters("response_id")["parameters"],
        {"name": "stream", "in": "query", "required": False, "schema": {"type": "boolean"}},
        {"name": "starting_after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
    ]
}


def _keepalive_seconds(request: Request) -> float:
    return float(getattr(request.app.state, "keepalive_seconds", KEEPALIVE_SECONDS))


@router.post("/v1/responses", response_model=None, openapi_extra=json_body(CreateResponseRequest, session_header=False))
async def create_response(request: Request) -> Response:
    owner = principal_of(request)
    raw = await json_object(request)
    body = parse_create_request(raw)
    service = responses_service(request)

    session_header = request.headers.get(SESSION_HEADER)

    async def answer() -> answers.Answer:
        prepared = await service.prepare(body, owner=owner, session_header=session_header)
        try:
            return prepared.session_id, await service.complete(prepared)
        except ApiError as error:
            raise answers.with_session_header(error, prepared.session_id) from None

    if body.background and not body.stream:
        # Queued at once, run by a job; an Idempotency-Key queues it once per key.
        async def queue() -> answers.Answer:
            prepared = await service.prepare(body, owner=owner, session_header=session_header)
            return prepared.session_id, await recorded_responses(request).queue(prepared, raw, session_header)

        return await answers.buffered(request, owner=owner, body=raw, answer=queue, stored_with_session=False)
    if not body.stream:
        return await answers.buffered(request, owner=owner, body=raw, answer=answer)
    prepared = await service.prepare(body, owner=owner, session_header=session_header)
    if not prepared.stores:
        # A plain stream: it ends (and the model call with it) when its client leaves.
        opening = open_response_stream(service.stream(prepared), prepared, _keepalive_seconds(request))
        return await answers.streamed(request, session_id=prepared.session_id, opening=opening)
    # A stored stream is recorded: it runs on when its client leaves, who may come back
    # with GET /v1/responses/{id}?stream=true&starting_after=N.
    run = await recorded_responses(request).start_stream(prepared)
    opening = open_recorded_stream(run.recorder.broadcast.follow(-1), prepared, _keepalive_seconds(request))
    return await answers.streamed(request, session_id=prepared.session_id, opening=opening)


@router.post("/v1/responses/compact", response_model=None)
async def compact_response(request: Request) -> Response:
    """Refused, plainly: OpenAI's compaction returns an opaque `compaction` item that
    only its own models can read back. Threadline compacts stored sessions itself."""
    principal_of(request)
    raise bad_request(
        "POST /v1/responses/compact is not supported by this server: it returns encrypted compaction items "
        "that only OpenAI's models can read. Threadline compacts stored conversations itself, under the same "
        "id: continue with previous_response_id or conversation, or compact a session now with "
        "POST /v1/sessions/{id}/compact.",
        param=None,
        code="unsupported_endpoint",
    )


@router.get("/v1/responses/{response_id}", response_model=None, openapi_extra=_RETRIEVE_PARAMETERS)
async def retrieve_response(request: Request) -> Response:
    """The stored response; with `stream=true`, its recorded events after
    `starting_after` (all of them without it), then its live ones until it ends."""
    response_id = path_param(request, "response_id")
    owner = principal_of(request)
    if _flag(request, "stream"):
        after = _starting_after(request)
        events = await recorded_responses(request).stream(owner, response_id, after)
        frames = replay_frames(events, _keepalive_seconds(request))
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
    if "starting_after" in request.query_params:
        raise bad_request("'starting_after' applies only with stream=true.", param="starting_after")
    stored = await recorded_responses(request).retrieve(owner, response_id)
    return JSONResponse(stored.body, headers={SESSION_HEADER: stored.session_id})


@router.post("/v1/responses/{response_id}/cancel", response_model=None, openapi_extra=path_parameters("response_id"))
async def cancel_response(request: Request) -> dict[str, Any]:
    """Cancel a background response that is queued or in progress: it ends `cancelled`,
    its model call is stopped and nothing of it is stored in its session."""
    response_id = path_param(request, "response_id")
    return await recorded_responses(request).cancel(principal_of(request), response_id)


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0", ""):
        return False
    raise bad_request(f"Invalid value for '{name}': expected true or false.", param=name, code="invalid_value")


def _starting_after(request: Request) -> int:
    raw = request.query_params.get("starting_after")
    if raw is None:
        return -1
    value = small_int(raw)
    if value is None:
        raise bad_request(
            "Invalid value for 'starting_after': expected a sequence number (a non-negative integer).",
            param="starting_after",
            code="invalid_value",
        )
    return value


@router.get(
    "/v1/responses/{response_id}/input_items",
    response_model=None,
    openapi_extra=path_parameters("response_id", page=20),
)
async def list_input_items(request: Request) -> dict[str, Any]:
    response_id = path_param(request, "response_id")
    raw_limit = request.query_params.get("limit")
    limit = 20 if raw_limit is None else small_int(raw_limit)
    if limit is None or not 1 <= limit <= 100:
        raise bad_request("limit must be an integer from 1 to 100.", param="limit", code="invalid_value")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("order must be 'asc' or 'desc'.", param="order", code="invalid_value")
    return await responses_service(request).input_items(
        principal_of(request), response_id, limit=limit, order=order, after=request.query_params.get("after")
    )


@router.delete("/v1/responses/{response_id}", response_model=None, openapi_extra=path_parameters("response_id"))
async def delete_response(request: Request) -> dict[str, Any]:
    response_id = path_param(request, "response_id")
    return await responses_service(request).delete(principal_of(request), response_id)
