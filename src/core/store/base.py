"""The session-store interface the chat service depends on.

Kept apart from DynamoDB so the service's rules read without table details, and
so the key design, conditions and retries live in one module (`dynamodb`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not be reached or answered with a server-side error after retries."""


class TurnTooLarge(Exception):
    """A message or a turn does not fit the store's limits; nothing was written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SessionKey:
    owner: str
    """The principal that owns the session (part of every key: rule 10)."""
    session_id: str


@dataclass(frozen=True)
class TurnUsage:
    """The tokens one model turn used, as its provider counted them (`core.providers`)."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class UsageTotals:
    """A session's running totals, kept on its head and moved by each turn's own write."""

    input_tokens: int = 0
    output_tokens: int = 0
    turns: int = 0
    """Model turns only: messages a client adds without a model call count no turn."""

    def plus(self, turn: TurnUsage | None) -> UsageTotals:
        if turn is None:
            return self
        return UsageTotals(
            self.input_tokens + turn.input_tokens, self.output_tokens + turn.output_tokens, self.turns + 1
        )


@dataclass(frozen=True)
class Head:
    """A session's head item as read: the version a conditional append expects."""

    next_seq: int
    base_seq: int
    created_at: float
    expires_at: int | None
    system: list[dict[str, Any]]
    title: str
    listed_at: float | None = None
    """When the session's listing entry last moved (None: never, or an earlier design's)."""
    metadata: dict[str, str] = field(default_factory=dict)
    """The conversation's metadata (`/v1/conversations`), set at creation or by an update."""
    meta_rev: int = 0
    """How many times the metadata was updated: a turn's write is conditioned on it, so a
    turn that read the head before an update never writes the old metadata back."""
    usage: UsageTotals = field(default_factory=UsageTotals)
    """The session's token and turn totals up to `next_seq` (written with every turn)."""

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Summary:
    """A compaction's summary of a session's messages `first_seq`..`last_seq` (inclusive)."""

    first_seq: int
    last_seq: int
    text: str
    created_at: float
    model: str = ""


@dataclass(frozen=True)
class SessionState:
    """What a read returns: the recent window and the version to append after."""

    head: Head | None = None
    """The head item read, live or expired; None when the session never existed."""
    exists: bool = False
    """True when the head is present and not expired."""
    system: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The most recent messages (at most the window), oldest first."""
    message_count: int = 0
    """How many messages the session holds in all."""
    fresh_seq: int = 0
    """Where a new life of this id starts numbering when there is no live head: after
    every item an earlier life left behind, so the newest-first window never reads them."""
    summary: Summary | None = None
    """The latest summary of this life's earlier messages (read by the same Query)."""
    summary_version: int = 0
    """The summary item's version as read: a compaction is claimed against it."""


@dataclass(frozen=True)
class NewTurn:
    messages: list[dict[str, Any]]
    """The turn's input messages followed by the assistant's reply."""
    system: list[dict[str, Any]]
    """The system prompt to keep if this turn creates the session (rule 4)."""
    title: str
    item_ids: list[list[str]] | None = None
    """Per message, the ids of the items it shows as (`core.items`); an empty list (or
    None for all) lets the store give stored ids when it knows the sequence numbers."""
    metadata: dict[str, str] | None = None
    """The conversation's metadata, kept if this turn creates the session."""
    usage: TurnUsage | None = None
    """The model's usage for this turn, kept on its last message and added to the head's
    totals in the same write; None when no model ran (items a client adds)."""


@dataclass(frozen=True)
class AppendResult:
    first_seq: int
    """The sequence number the turn's first message got."""
    conflicts: int
    """How many times a concurrent turn won the race and this one was retried."""


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    title: str
    message_count: int
    created_at: float
    updated_at: float
    usage: UsageTotals = field(default_factory=UsageTotals)


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    """Its position in the session, from 0 (or from where a re-created session starts)."""
    message: dict[str, Any]
    created_at: float
    item_ids: list[str] = field(default_factory=list)
    """The ids of the items the message shows as (`core.items.render`)."""
    usage: TurnUsage | None = None
    """On the last message of a model turn (its reply): that turn's usage."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
    """Pass back as `after` for the next page; None on the last page."""


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not hand out."""


class SessionStore(Protocol):
    def check_turn(
        self, messages: list[dict[str, Any]], *, fresh_session: bool, system: list[dict[str, Any]] | None = None
    ) -> None:
        """Raise `TurnTooLarge` if these messages could not be stored; reads nothing."""
        ...

    async def load(self, key: SessionKey, window: int) -> SessionState:
        """The session's head and its last `window` messages; `StoreUnavailable` on failure."""
        ...

    async def append(
        self,
        key: SessionKey,
        turn: NewTurn,
        expected: SessionState | None,
        *,
        fresh_session: bool = False,
        run_guard: RunGuard | None = None,
    ) -> AppendResult:
        """Append a turn atomically after whatever the session holds now.

        `expected` is the state the caller read (None if the read failed); when
        another turn was appended since, the turn goes after it. `fresh_session`
        says the id was generated for this request, so nobody else can write it.
        With `run_guard`, the turn is stored only while that recorded run is still its
        worker's and not asked to stop (`RunRevoked` otherwise; nothing stored).
        """
        ...

    async def list_sessions(self, owner: str, *, limit: int, after: str | None) -> Page[SessionSummary]:
        """The owner's live sessions, most recently active first."""
        ...

    async def list_messages(
        self, key: SessionKey, *, limit: int, after: str | None, descending: bool = False
    ) -> Page[StoredMessage] | None:
        """A session's messages in order (newest first if `descending`), after the cursor
        `after` (a sequence number); None when there is no such (live) session."""
        ...

    async def head(self, key: SessionKey) -> Head | None:
        """The session's head if it is live."""
        ...

    async def get_messages(self, key: SessionKey, seqs: list[int]) -> dict[int, StoredMessage] | None:
        """These committed messages of the session (those that exist); None without a live session."""
        ...

    async def find_message(self, key: SessionKey, item_id: str) -> StoredMessage | None:
        """The message showing the item `item_id`, read from the whole session (a fallback
        for ids that do not say where their item is any more)."""
        ...

    async def delete_message(self, key: SessionKey, seq: int) -> bool:
        """Remove one message from the session (a conversation item); False when absent."""
        ...

    async def update_metadata(self, key: SessionKey, metadata: dict[str, str]) -> Head | None:
        """Replace the conversation's metadata; None without a live session."""
        ...

    async def delete_session(self, key: SessionKey) -> bool:
        """Remove every item of a session, however many; False when there is none."""
        ...

    # compaction (`core.compaction`)

    async def claim_compaction(self, key: SessionKey, state: SessionState, claim_id: str, lease: float) -> bool:
        """Take the right to write the next summary; False when another compaction has it
        or a summary was written since `state` was read."""
        ...

    async def release_compaction(self, key: SessionKey, claim_id: str) -> None: ...

    async def save_summary(self, key: SessionKey, state: SessionState, summary: Summary, claim_id: str) -> bool:
        """Store the summary if the claim `claim_id` still holds; False when it was lost."""
        ...

    async def read_messages(self, key: SessionKey, first: int, last: int) -> list[StoredMessage]: ...

    async def list_summaries(self, key: SessionKey, first: int, last: int) -> list[Summary]:
        """The summaries whose last covered message is in `first`..`last`, in order."""
        ...


# -- stored responses (the Responses API) ------------------------------------------------


@dataclass(frozen=True)
class StoredResponse:
    response_id: str
    session_id: str
    """The session (chain) the response's turn was appended to."""
    position: int
    """The session's `next_seq` right after the turn: its history is `seq < position`."""
    created_at: float
    expires_at: int | None
    body: dict[str, Any]
    """The Response object as returned to the client."""
    input_count: int | None = None
    """How many messages of its turn, before the reply, were its request's input (the
    rest were a fork's copy of history); None for responses stored before it was kept."""
    status: str = "completed"
    """`queued` / `in_progress` while it runs (issue 13), then as its body says."""
    recorded: bool = False
    """Its stream's events are kept: it can be streamed again (`GET ...?stream=true`)."""
    background: bool = False


@dataclass(frozen=True)
class RunGuard:
    """A recorded run whose turn is being stored: its state item and its worker."""

    pk: str
    state_sk: str
    worker: str


@dataclass(frozen=True)
class RecordedCommit:
    """A recorded response's last write, made by its turn's transaction: its remaining
    events (the terminal one included), on the condition that the run is still
    `worker`'s (a cancel that came first wins, and nothing is stored)."""

    worker: str
    events: list[tuple[int, str]]


@dataclass(frozen=True)
class ConversationPointer:
    name: str
    latest_response_id: str
    session_id: str
    position: int
    expires_at: int | None


@dataclass(frozen=True)
class ChainHistory:
    """A session read "up to a position"."""

    position: int
    head: Head | None
    """The session's head; None when the session does not exist (deleted, never written)."""
    usable: bool
    """The head is live and the position lies in its current life: the history is there."""
    messages: list[dict[str, Any]]
    """At most `window` messages with seq < position, oldest first."""
    earlier: bool
    """The session holds messages before these (the window cut it)."""
    summary: Summary | None = None
    """The session's latest summary, when it covers only messages before these."""
    summary_version: int = 0

    @property
    def is_tip(self) -> bool:
        """Nothing was appended after this position: continuing it appends to the session."""
        return self.usable and self.head is not None and self.head.next_seq == self.position


class ResponseStore(Protocol):
    """What the Responses service needs of a store: responses by id, a chain's history
    up to a position, and a turn appended together with its response."""

    def new_session_expiry(self) -> int | None: ...

    def check_response(self, body: dict[str, Any]) -> None:
        """Raise `TurnTooLarge` if this Response object could not be stored."""
        ...

    async def get_response(self, owner: str, response_id: str) -> StoredResponse | None: ...

    async def delete_response(self, owner: str, response_id: str) -> bool: ...

    async def get_conversation(self, owner: str, name: str) -> ConversationPointer | None:
        """A conversation name of the earlier design (read only, to carry it over)."""
        ...

    async def load_history(self, key: SessionKey, position: int, window: int) -> ChainHistory: ...

    async def append_response(
        self,
        key: SessionKey,
        turn: NewTurn,
        expected: SessionState | None,
        *,
        fresh_session: bool,
        response: StoredResponse,
        retire: ConversationPointer | None = None,
        recorded: RecordedCommit | None = None,
    ) -> tuple[AppendResult, StoredResponse]:
        """The turn and the response item, stored together or not at all (and `retire`,
        an earlier design's conversation pointer whose chain the turn carries over,
        deleted with them unless it moved meanwhile)."""
        ...
