"""The keys' configuration format: who owns each key, and which configurations are refused."""

from __future__ import annotations

import hashlib

import pytest

from core.settings import Settings
from handler.principals import KeyConfigError, parse_entries, parse_secret, split_entries


def derived(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def test_named_plain_and_json_entries_give_each_key_its_owner() -> None:
    table = parse_secret("alice:k1\nalice:k2, plain-key\n\nbob:with:colons ,")
    assert table.principal_for("k1") == table.principal_for("k2") == "alice"
    assert table.principal_for("plain-key") == derived("plain-key")
    assert table.principal_for("with:colons") == "bob"  # split at the first colon
    assert table.principal_for("bob:with:colons") is None
    as_json = parse_secret('{"alice": ["k1", "k2"], "bob": "k3", "parked": []}')
    assert as_json.principal_for("k2") == "alice" and as_json.principal_for("k3") == "bob"
    assert as_json.principals == {"alice", "bob"}


def test_an_entry_without_a_valid_name_before_its_colon_is_a_plain_key() -> None:
    for key in ("a/b:c", ":leading", "a" * 65 + ":long", "sp ace:x"):
        assert parse_entries((key,)).principal_for(key) == derived(key)
    # Which is why a key with a colon is written with a name: this one would be "https"'s.
    assert parse_entries(("https://host",)).principal_for("//host") == "https"


def test_a_derived_name_can_be_written_out_and_other_key_names_are_refused() -> None:
    written = parse_entries((f"{derived('old')}:new", "old"))
    assert written.principal_for("new") == written.principal_for("old") == derived("old")
    with pytest.raises(KeyConfigError, match="reserved"):
        parse_entries(("key-admin:secret-value",))
    with pytest.raises(KeyConfigError, match="reserved"):
        parse_secret('{"key-ABCDEF0123456789abcdef01": "secret-value"}')


@pytest.mark.parametrize(
    "text",
    [
        "alice:secret-value, bob:secret-value",
        "secret-value\nbob:secret-value",
        '{"alice": "secret-value", "bob": ["other", "secret-value"]}',
        "alice:",
        '{"alice": 7}',
        '{"alice": "x"',
        '["secret-value"]',
        '{"bad name": "secret-value"}',
    ],
)
def test_invalid_configurations_are_refused_without_quoting_a_key(text: str) -> None:
    with pytest.raises(KeyConfigError) as refused:
        parse_secret(text)
    assert "secret-value" not in str(refused.value)
    assert "alice" not in str(refused.value) and "bob" not in str(refused.value)


def test_the_same_key_twice_for_one_owner_is_fine() -> None:
    assert len(parse_secret(f"k1, {derived('k1')}:k1")) == 1
    assert len(parse_secret("alice:k1\nalice:k1")) == 1


def test_api_keys_are_separated_by_commas_or_newlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "alice:k1\nalice:k2,  bob:k3\r\n")
    assert Settings.from_env().api_keys == ("alice:k1", "alice:k2", "bob:k3")
    assert split_entries("a,\nb\r\n") == ("a", "b")


def test_the_stale_limit_is_never_below_the_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().api_keys_max_stale_seconds == 900
    monkeypatch.setenv("API_KEYS_MAX_AGE_SECONDS", "1200")
    assert Settings.from_env().api_keys_max_stale_seconds == 1200  # unset: follows a raised max age
    monkeypatch.setenv("API_KEYS_MAX_STALE_SECONDS", "600")
    with pytest.raises(ValueError, match="API_KEYS_MAX_STALE_SECONDS must be at least"):
        Settings.from_env()
    with pytest.raises(ValueError, match="must be at least"):
        Settings(api_keys_max_age_seconds=60, api_keys_max_stale_seconds=30)
