"""The API keys in force: from `API_KEYS`, or from a Secrets Manager secret, with bounded staleness.

Keys read from the secret are trusted for `API_KEYS_MAX_AGE_SECONDS`, then read again,
so a rotation or a revocation takes effect without a redeploy. When a read fails (the
secret cannot be reached, or holds an invalid configuration), the keys of the last
successful read keep serving, but only until `API_KEYS_MAX_STALE_SECONDS` after that
read: past it, keyed requests get a 503 rather than keys that may have been revoked.
A failed read is retried at most every `retry_seconds`, and one read at a time runs per
process; requests arriving during a read are served from the cache while it is usable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio

from core.errors import ApiError
from core.settings import Settings
from handler import lifecycle
from handler.principals import KeyConfigError, KeyTable, parse_entries, parse_secret

logger = logging.getLogger("threadline.auth")

RETRY_SECONDS = 5.0


class SecretUnreadable(Exception):
    """The secret could not be read; the message never contains its value."""


def read_secret_with_botocore(arn: str) -> Callable[[], str]:
    """A reader of the secret's current value through the process's Secrets Manager client
    (`core.secrets`: short timeouts, since a request waiting on a refresh must not outlive
    API Gateway's 29 s)."""

    def read() -> str:
        import botocore.exceptions

        from core.secrets import read_secret

        try:
            return read_secret(arn)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise SecretUnreadable(f"{type(error).__name__}: {error}") from None

    return read


class KeyRing:
    """The process's keys; `table()` is awaited by the auth middleware on each keyed request."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = RETRY_SECONDS,
        read_secret: Callable[[], str] | None = None,
    ) -> None:
        # Static keys are checked here, when the app is created: a bad API_KEYS stops the start.
        self._static = parse_entries(settings.api_keys, source="API_KEYS")
        self.secret_arn = settings.api_keys_secret_arn
        self.max_age = settings.api_keys_max_age_seconds
        self.max_stale = settings.api_keys_max_stale_seconds
        self.clock = clock
        self.retry_seconds = retry_seconds
        self._read = read_secret or (read_secret_with_botocore(self.secret_arn) if self.secret_arn else None)
        self._lock = threading.Lock()  # one read in flight, whatever event loop or thread asks
        self._last: tuple[KeyTable, float] | None = None  # the last good table, and when it was read
        self._retry_at = float("-inf")
        lifecycle.after_restore(self.forget)

    def forget(self) -> None:
        """Drop the keys read from the secret: after a SnapStart restore they are read again
        (the snapshot may be hours old, and a key revoked since must not be served)."""
        self._last = None
        self._retry_at = float("-inf")

    @property
    def open(self) -> bool:
        return not self._static and not self.secret_arn

    async def table(self) -> KeyTable:
        if self._read is None:
            return self._static
        now = self.clock()
        cached = self._usable(now)
        if cached is not None and (
            now - self._last_read_at() < self.max_age or now < self._retry_at or self._lock.locked()
        ):
            return cached
        return await anyio.to_thread.run_sync(self._refresh)

    def _last_read_at(self) -> float:
        return self._last[1] if self._last is not None else float("-inf")

    def _usable(self, now: float) -> KeyTable | None:
        last = self._last
        if last is not None and now - last[1] < self.max_stale:
            return last[0]
        return None

    def _refresh(self) -> KeyTable:
        """Runs in a worker thread; waits for a read already in flight rather than starting one."""
        assert self._read is not None
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last[1] < self.max_age:
                return self._last[0]  # another request refreshed while this one waited
            if now >= self._retry_at:
                try:
                    table = parse_secret(self._read())
                except (SecretUnreadable, KeyConfigError) as error:
                    self._retry_at = now + self.retry_seconds
                    logger.error("could not refresh the API keys from their secret: %s", error)
                else:
                    self._last = (table, now)
                    self._retry_at = float("-inf")
                    return table
            cached = self._usable(now)
            if cached is not None:
                return cached
        logger.error("no API keys read successfully within API_KEYS_MAX_STALE_SECONDS: refusing keyed requests")
        raise ApiError(503, "The service cannot check API keys right now; retry later.", code="service_unavailable")
