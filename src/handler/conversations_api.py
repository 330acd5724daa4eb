"""OpenAI's Conversations API: `/v1/conversations` and its items (`core.conversations`).

A conversation is a session: every route takes any session id the caller owns, and
another principal's id gets the same 404 as one that never existed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from core.conversations import ConversationsService, conversation_key
from core.errors import bad_request
from core.store.base import SessionKey
from handler.deps import conversations_service, principal_of
from handler.parsing import json_object, path_param, path_parameters, small_int

router = APIRouter()

DEFAULT_ITEMS_PAGE = 20
MAX_PAGE = 100


def _service(request: Request) -> ConversationsService:
    return conversations_service(request)


def _key(request: Request) -> SessionKey:
    return conversation_key(principal_of(request), path_param(request, "conversation_id"))


def _item_query(request: Request) -> tuple[int, str, str | None]:
    raw_limit = request.query_params.get("limit")
    limit = DEFAULT_ITEMS_PAGE if raw_limit is None else small_int(raw_limit)
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise bad_request(f"limit must be an integer from 1 to {MAX_PAGE}.", param="limit", code="invalid_value")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("order must be 'asc' or 'desc'.", param="order", code="invalid_value")
    return limit, order, request.query_params.get("after")


def _item_parameters() -> dict[str, Any]:
    parameters = path_parameters("conversation_id", page=DEFAULT_ITEMS_PAGE)
    parameters["parameters"].append(
        {"name": "order", "in": "query", "required": False, "schema": {"type": "string", "enum": ["asc", "desc"]}}
    )
    return parameters


@router.post("/v1/conversations", response_model=None)
async def create_conversation(request: Request) -> dict[str, Any]:
    raw = await request.body()
    body = await json_object(request) if raw.strip() else {}
    return await _service(request).create(principal_of(request), body)


@router.get(
    "/v1/conversations/{conversation_id}", response_model=None, openapi_extra=path_parameters("conversation_id")
)
async def retrieve_conversation(request: Request) -> dict[str, Any]:
    return await _service(request).retrieve(_key(request))


@router.post(
    "/v1/conversations/{conversation_id}", response_model=None, openapi_extra=path_parameters("conversation_id")
)
async def update_conversation(request: Request) -> dict[str, Any]:
    key = _key(request)
    return await _service(request).update(key, await json_object(request))


@router.delete(
    "/v1/conversations/{conversation_id}", response_model=None, openapi_extra=path_parameters("conversation_id")
)
async def delete_conversation(request: Request) -> dict[str, Any]:
    return await _service(request).delete(_key(request))


@router.get("/v1/conversations/{conversation_id}/items", response_model=None, openapi_extra=_item_parameters())
async def list_conversation_items(request: Request) -> dict[str, Any]:
    key = _key(request)
    limit, order, after = _item_query(request)
    return await _service(request).list_items(key, limit=limit, order=order, after=after)


@router.post(
    "/v1/conversations/{conversation_id}/items", response_model=None, openapi_extra=path_parameters("conversation_id")
)
async def create_conversation_items(request: Request) -> dict[str, Any]:
    key = _key(request)
    return await _service(request).add_items(key, await json_object(request))


@router.get(
    "/v1/conversations/{conversation_id}/items/{item_id}",
    response_model=None,
    openapi_extra=path_parameters("conversation_id", "item_id"),
)
async def retrieve_conversation_item(request: Request) -> dict[str, Any]:
    return await _service(request).get_item(_key(request), path_param(request, "item_id"))


@router.delete(
    "/v1/conversations/{conversation_id}/items/{item_id}",
    response_model=None,
    openapi_extra=path_parameters("conversation_id", "item_id"),
)
async def delete_conversation_item(request: Request) -> dict[str, Any]:
    return await _service(request).delete_item(_key(request), path_param(request, "item_id"))
