"""Key shapes that more than one module writes or follows (docs/storage.md).

The session store, the idempotency guard and a session's deletion must agree on
them byte for byte: a reference written under one spelling and followed under
another would leave content behind.
"""

from __future__ import annotations

import hashlib

HEAD_SK = "SESSION"
"""The sort key of a session's head item."""
REFERENCE_PREFIX = "#REF#"
"""Sort keys of the items in a session partition that name content stored elsewhere.

It sorts before `MSG#` (`#` < `M`), so the newest-first Query that reads the head
and the window never passes a reference: with `REF#` (between `MSG#` and `SESSION`)
every reference of the session would come between the head and the newest message,
count against the Query's `Limit` and push the window out (41 idempotent turns and
a 40-message window would read no message at all)."""
IDEMPOTENCY_PREFIX = "IDEMPOTENCY#"


def session_pk(owner: str, session_id: str) -> str:
    return f"SESSION#{owner}#{session_id}"


def reference_sk(ref_pk: str) -> str:
    """The reference item, in a session partition, to the item whose partition is `ref_pk`."""
    return f"{REFERENCE_PREFIX}{ref_pk}"


def idempotency_pk(owner: str, route: str, key: str) -> str:
    """A partition per idempotency record, so that no key is shared by every request of
    a principal; the route and the key are hashed (a key may hold any printable text)."""
    digest = hashlib.sha256(f"{route}\0{key}".encode()).hexdigest()[:32]
    return f"{IDEMPOTENCY_PREFIX}{owner}#{digest}"
