"""Items as the earlier key design wrote them, for tests of what Threadline still reads.

Nothing in the service writes these any more; tests seed them the way a table written
by an earlier version holds them.
"""

from __future__ import annotations

from typing import Any

from core.store.base import ConversationPointer


def write_conversation_pointer(client: Any, table: str, owner: str, pointer: ConversationPointer) -> None:
    """A `conversation` name of the earlier design: it pointed at a chain's latest response."""
    item: dict[str, Any] = {
        "pk": {"S": f"CONVERSATION#{owner}#{pointer.name}"},
        "sk": {"S": "CONVERSATION"},
        "owner": {"S": owner},
        "conversation": {"S": pointer.name},
        "latest_response_id": {"S": pointer.latest_response_id},
        "session_id": {"S": pointer.session_id},
        "position": {"N": str(pointer.position)},
        "updated_at": {"N": "0"},
    }
    if pointer.expires_at is not None:
        item["expires_at"] = {"N": str(pointer.expires_at)}
    client.put_item(TableName=table, Item=item)
