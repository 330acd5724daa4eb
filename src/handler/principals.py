"""Which principal each API key belongs to: the `API_KEYS` / secret format, parsed and checked.

A principal is the owner of sessions, responses and idempotency records; a key only
proves who is calling. So a principal can hold several keys at once (a rotation
overlaps), and an owner's data survives any change of keys.

Text form (`API_KEYS`, or the secret): entries separated by commas or newlines. An entry
`name:key` gives `key` to the principal `name` (split at the first colon, so the key may
contain colons); an entry without a valid name before a colon is a plain key, owned by
its derived name `key-<first 24 hex of sha256(key)>` (what every key was owned by before
principals had names, so old tables need no migration). JSON form (the secret only):
`{"alice": ["k1", "k2"], "bob": "k3"}`.

A name is 1-64 characters of `A-Za-z0-9._-`. Names starting with `key-` are reserved for
derived names: `key-` must be followed by exactly 24 lowercase hex digits, so a derived
name can be written out to keep a plain key's data while adding a second key to it.
A key given to two principals is refused. No error message quotes a key, or a name
(a name is read from the text before a colon, which may be part of a key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
DERIVED_NAME = re.compile(r"key-[0-9a-f]{24}")


class KeyConfigError(ValueError):
    """The keys' configuration is invalid; the message never contains a key."""


def principal_id(key: str) -> str:
    """The derived name of a key listed without a name: stable, non-reversible."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True)
class KeyTable:
    """Digests of the keys (never the keys themselves) and the principal of each."""

    entries: tuple[tuple[bytes, str], ...] = ()

    def principal_for(self, presented: str) -> str | None:
        """The principal of `presented`, compared in constant time: fixed-length digests,
        and every key is compared whatever the outcome."""
        presented_digest = _digest(presented)
        found: str | None = None
        for digest, principal in self.entries:
            if hmac.compare_digest(presented_digest, digest):
                found = principal
        return found

    @property
    def principals(self) -> frozenset[str]:
        return frozenset(principal for _, principal in self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def _check_name(name: str, where: str) -> str:
    if not NAME.fullmatch(name):
        raise KeyConfigError(f"{where}: a principal name is 1-64 characters of A-Za-z0-9._-")
    if name.startswith("key-") and not DERIVED_NAME.fullmatch(name):
        raise KeyConfigError(f"{where}: names starting with 'key-' are reserved for derived names (key- and 24 hex)")
    return name


def _table(pairs: Iterable[tuple[str, str, str]], source: str) -> KeyTable:
    """From (where, principal, key) triples; refuses empty keys and a key with two owners."""
    owners: dict[bytes, tuple[str, str]] = {}
    for where, principal, key in pairs:
        if not key:
            raise KeyConfigError(f"{source} {where}: no key after the name")
        digest = _digest(key)
        earlier = owners.setdefault(digest, (where, principal))
        if earlier[1] != principal:
            raise KeyConfigError(f"{source}: {earlier[0]} and {where} give one key to two principals")
    return KeyTable(tuple((digest, principal) for digest, (_, principal) in owners.items()))


def split_entries(text: str) -> tuple[str, ...]:
    """Entries of the text form: separated by commas or newlines, blanks dropped."""
    return tuple(entry.strip() for entry in text.replace("\r", "\n").replace("\n", ",").split(",") if entry.strip())


def parse_entries(entries: Iterable[str], *, source: str = "API_KEYS") -> KeyTable:
    """The text form's entries (`name:key` or a plain key) as a table."""

    def pairs() -> Iterable[tuple[str, str, str]]:
        for number, entry in enumerate(entries, start=1):
            where = f"entry {number}"
            name, colon, key = entry.partition(":")
            if colon and NAME.fullmatch(name.strip()):
                yield where, _check_name(name.strip(), f"{source} {where}"), key.strip()
            else:
                yield where, principal_id(entry.strip()), entry.strip()

    return _table(pairs(), source)


def parse_json(text: str, *, source: str) -> KeyTable:
    """`{"principal": "key" | ["key", ...]}`."""
    try:
        document: Any = json.loads(text)
    except ValueError:
        raise KeyConfigError(f"{source}: starts like JSON but is not valid JSON") from None
    if not isinstance(document, dict):
        raise KeyConfigError(f"{source}: JSON must be an object of principal -> key or list of keys")

    def pairs() -> Iterable[tuple[str, str, str]]:
        for number, (name, value) in enumerate(document.items(), start=1):
            where = f"principal {number}"
            _check_name(name, f"{source} {where}")
            keys = [value] if isinstance(value, str) else value
            if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
                raise KeyConfigError(f"{source} {where}: the value must be a key or a list of keys")
            for key in keys:
                yield where, name, key.strip()

    return _table(pairs(), source)


def parse_secret(text: str, *, source: str = "the API keys secret") -> KeyTable:
    """The secret's value: JSON when it starts with `{` (or `[`, refused), else the text form."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return parse_json(stripped, source=source)
    return parse_entries(split_entries(stripped), source=source)
