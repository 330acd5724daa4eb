"""OpenAI's Conversations API over the session store: a conversation IS a session.

`POST /v1/conversations` creates a session (id `conv_<48 hex>`) holding its initial
items; every other route takes any session id the caller owns, so a session started by
`X-Hermes-Session-Id`, by a Responses chain or by the chat page reads as a conversation,
and a conversation continues through any face (its id in the header, or `conversation`
on Responses). Items are the session's stored messages as `core.items` shows them,
under the ids they keep on every face.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from core.errors import ApiError, bad_request, not_found, too_large, unavailable
from core.items import StoredItemId, item_list, parse_item_id, render
from core.responses.items import input_messages
from core.sessions import title_of, validate_session_id
from core.store.base import Head, NewTurn, SessionKey, SessionState, SessionStore, StoreUnavailable, TurnTooLarge

if TYPE_CHECKING:
    from core.store.responses import DynamoDBResponseStore

MAX_INITIAL_ITEMS = 20
MAX_METADATA_PAIRS = 16
MAX_LIST = 100


def new_conversation_id() -> str:
    return "conv_" + secrets.token_hex(24)


def validate_metadata(raw: Any, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 pairs, keys up to 64 and values up to 512 characters."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_METADATA_PAIRS:
        raise bad_request(
            f"Invalid '{param}': an object of at most {MAX_METADATA_PAIRS} string pairs.",
            param=param,
            code="invalid_value",
        )
    for key, value in raw.items():
        if not isinstance(key, str) or len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise bad_request(
                f"Invalid '{param}': keys are strings of up to 64 characters, values strings of up to 512.",
                param=param,
                code="invalid_value",
            )
    return dict(raw)


def conversation_body(session_id: str, head: Head) -> dict[str, Any]:
    return {"id": session_id, "object": "conversation", "created_at": int(head.created_at), "metadata": head.metadata}


class ConversationsService:
    def __init__(self, store: SessionStore, responses: DynamoDBResponseStore | None = None) -> None:
        self.store = store
        self.responses = responses
        """Resolves the ids of responses' output items (optional: without it, only stored ids)."""

    async def create(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        metadata = validate_metadata(body.get("metadata"))
        items = body.get("items")
        if items is not None and (not isinstance(items, list) or len(items) > MAX_INITIAL_ITEMS):
            raise bad_request(
                f"Invalid 'items': a list of at most {MAX_INITIAL_ITEMS} items.", param="items", code="invalid_value"
            )
        messages = _as_messages(items) if items else []
        key = SessionKey(owner=owner, session_id=new_conversation_id())
        await self._append(key, messages, SessionState(), fresh=True, metadata=metadata)
        head = await self._head(key)
        return conversation_body(key.session_id, head)

    async def retrieve(self, key: SessionKey) -> dict[str, Any]:
        return conversation_body(key.session_id, await self._head(key))

    async def update(self, key: SessionKey, body: dict[str, Any]) -> dict[str, Any]:
        if "metadata" not in body:
            raise bad_request(
                "Missing required parameter: 'metadata'.", param="metadata", code="missing_required_parameter"
            )
        metadata = validate_metadata(body.get("metadata"))
        try:
            head = await self.store.update_metadata(key, metadata)
        except StoreUnavailable:
            raise unavailable("The conversation store is unavailable right now; retry the request.") from None
        if head is None:
            raise _missing(key.session_id)
        return conversation_body(key.session_id, head)

    async def delete(self, key: SessionKey) -> dict[str, Any]:
        try:
            deleted = await self.store.delete_session(key)
        except StoreUnavailable:
            raise unavailable("The conversation store is unavailable right now; retry the request.") from None
        if not deleted:
            raise _missing(key.session_id)
        return {"id": key.session_id, "object": "conversation.deleted", "deleted": True}

    # -- items -----------------------------------------------------------------------

    async def list_items(self, key: SessionKey, *, limit: int, order: str, after: str | None) -> dict[str, Any]:
        """Items newest first (`order=desc`, the default) or oldest first. Paged by message:
        a page ends on a whole message, so an assistant message's items stay together."""
        cursor: str | None = None
        skip_through: str | None = None
        if after is not None:
            where = await self._locate(key, after)
            start = where.seq + (1 if order == "desc" else -1)
            cursor = str(start) if 0 <= start < 10**12 else None
            skip_through = after
        items: list[dict[str, Any]] = []
        has_more = False
        try:
            while len(items) < limit + 1:
                page = await self.store.list_messages(key, limit=limit, after=cursor, descending=order == "desc")
                if page is None:
                    raise _missing(key.session_id)
                for stored in page.items:
                    shown = render(stored.message, stored.item_ids)
                    items += shown[::-1] if order == "desc" else shown
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        except StoreUnavailable:
            raise unavailable("The conversation store is unavailable right now; retry the request.") from None
        if skip_through is not None:
            ids = [item["id"] for item in items]
            if skip_through in ids:
                items = items[ids.index(skip_through) + 1 :]
        has_more = len(items) > limit
        return item_list(items[:limit], has_more=has_more)

    async def add_items(self, key: SessionKey, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("items")
        if not isinstance(items, list) or not items or len(items) > MAX_INITIAL_ITEMS:
            raise bad_request(
                f"Invalid 'items': a list of 1 to {MAX_INITIAL_ITEMS} items.", param="items", code="invalid_value"
            )
        messages = _as_messages(items)
        try:
            state = await self.store.load(key, 0)
        except StoreUnavailable:
            raise unavailable("The conversation store is unavailable right now; retry the request.") from None
        if not state.exists:
            raise _missing(key.session_id)
        first_seq = await self._append(key, messages, state, fresh=False)
        found = await self.store.get_messages(key, list(range(first_seq, first_seq + len(messages)))) or {}
        created = [item for seq in sorted(found) for item in render(found[seq].message, found[seq].item_ids)]
        return item_list(created, has_more=False)

    async def get_item(self, key: SessionKey, item_id: str) -> dict[str, Any]:
        where = await self._locate(key, item_id)
        found = await self.store.get_messages(key, [where.seq])
        stored = (found or {}).get(where.seq)
        for item in render(stored.message, stored.item_ids) if stored else []:
            if item["id"] == item_id:
                return item
        raise _missing_item(item_id)

    async def delete_item(self, key: SessionKey, item_id: str) -> dict[str, Any]:
        """Removes the stored message the item belongs to (with an assistant message's
        tool calls, all of its items); the conversation is returned, as in OpenAI's API."""
        await self.get_item(key, item_id)
        where = await self._locate(key, item_id)
        try:
            await self.store.delete_message(key, where.seq)
        except StoreUnavailable:
            raise unavailable("The conversation store is unavailable right now; retry the request.") from None
        return await self.retrieve(key)

    # -- internals ---------------------------------------------------------------------

    async def _head(self, key: SessionKey) -> Head:
        try:
            head = await self.store.head(key)
        except StoreUnavailable:
            raise unavailable("The conversation store is unavailable right now; retry the request.") from None
        if head is None:
            raise _missing(key.session_id)
        return head

    async def _locate(self, key: SessionKey, item_id: str) -> StoredItemId:
        """Where an item id of this conversation is; a 404 for any other id."""
        where = parse_item_id(item_id)
        if isinstance(where, StoredItemId):
            if where.seq >= 10**12:
                raise _missing_item(item_id)  # beyond any sequence number: no such item
            return where
        if where is not None and self.responses is not None:  # a response's output: its turn's last message
            try:
                response = await self.responses.get_response(key.owner, where.response_id)
            except StoreUnavailable:
                raise unavailable("The conversation store is unavailable right now; retry the request.") from None
            if response is not None and response.session_id == key.session_id:
                return StoredItemId(seq=response.position - 1)
            if response is None:  # deleted: its output items are still the session's
                try:
                    found = await self.store.find_message(key, item_id)
                except StoreUnavailable:
                    raise unavailable("The conversation store is unavailable right now; retry the request.") from None
                if found is not None:
                    return StoredItemId(seq=found.seq)
        raise _missing_item(item_id)

    async def _append(
        self,
        key: SessionKey,
        messages: list[dict[str, Any]],
        state: SessionState,
        *,
        fresh: bool,
        metadata: dict[str, str] | None = None,
    ) -> int:
        try:
            self.store.check_turn(messages, fresh_session=fresh)
            result = await self.store.append(
                key,
                NewTurn(messages=messages, system=[], title=title_of(messages), metadata=metadata),
                state,
                fresh_session=fresh,
            )
        except TurnTooLarge as error:
            raise too_large(error.reason + " Nothing was stored.", param="items") from None
        except StoreUnavailable:
            raise unavailable("The conversation could not be saved, so nothing was stored. Retry.") from None
        return result.first_seq


def conversation_key(owner: str, conversation_id: str) -> SessionKey:
    """The session a conversation id names; a 404 for an id no session can have."""
    try:
        validate_session_id(conversation_id)
    except Exception:
        raise _missing(conversation_id) from None
    return SessionKey(owner=owner, session_id=conversation_id)


def _as_messages(items: list[Any]) -> list[dict[str, Any]]:
    """Items as the chat messages a session keeps (the Responses input rules), with the
    parameter named `items` in errors."""
    try:
        return input_messages(items)
    except ApiError as error:
        if error.param is not None and error.param.startswith("input"):
            error.param = "items" + error.param.removeprefix("input")
            error.message = error.message.replace("'input", "'items")
        raise


def _missing(conversation_id: str) -> Exception:
    return not_found(f"No conversation found with id '{conversation_id[:128]}'.", param="conversation_id")


def _missing_item(item_id: str) -> Exception:
    return not_found(f"No item found with id '{item_id[:128]}'.", param="item_id")
