"""Configuration, read once from the environment.

Every variable is documented in the README's configuration table; the defaults
are the local ones (`make run`), the template sets the deployed ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

DEFAULT_MODELS: dict[str, str] = {
    "echo": "echo",
    "openai": "gpt-4o-mini",
    "bedrock": "amazon.nova-lite-v1:0",
}


def parse_models(spec: str) -> dict[str, str]:
    """`"fast=llama3:8b, gpt-4o"` -> `{"fast": "llama3:8b", "gpt-4o": "gpt-4o"}`, in order.

    The left side is the name clients send and `/v1/models` lists; the right side is
    the provider's own model id. The first entry is the default model.
    """
    models: dict[str, str] = {}
    for entry in spec.split(","):
        entry = entry.strip()
        if not entry:
            continue
        public, _, upstream = entry.partition("=")
        public = public.strip()
        models[public] = upstream.strip() or public
    return models


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _choice(name: str, choices: tuple[str, ...], *, default: str) -> str:
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _flag(name: str, *, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "on", "true", "yes"}:
        return True
    if raw in {"0", "off", "false", "no"}:
        return False
    raise ValueError(f"{name} must be on or off, got {raw!r}")


def _list(name: str, *, newlines: bool = False) -> tuple[str, ...]:
    raw = os.environ.get(name, "")
    if newlines:
        raw = raw.replace("\r", "\n").replace("\n", ",")
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    sessions_table: str = "threadline-sessions"
    model_provider: str = "echo"
    models: dict[str, str] = field(default_factory=lambda: {"echo": "echo"})
    history_window: int = 40
    session_ttl_days: int = 30
    listing_shards: int = 16
    """Owner-index partitions per principal (docs/scale.md): only ever raise it."""
    listing_interval_seconds: int = 30
    """How often, at most, a busy session moves in the listing (its order's resolution)."""
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_timeout_seconds: int = 600
    echo_delay_ms: int = 0
    compaction: bool = True
    """Summarise what leaves the history window (COMPACTION=off turns it off)."""
    compaction_threshold: int = 20
    """Messages outside the window, not yet summarised, that make a compaction due."""
    api_keys: tuple[str, ...] = ()
    """Entries `name:key` or plain keys (see `handler.principals` for the format)."""
    api_keys_secret_arn: str | None = None
    """A Secrets Manager secret holding the keys in the same form, or JSON (the deployed setting)."""
    api_keys_max_age_seconds: int = 300
    """How long fetched keys are trusted before the secret is read again (rotation)."""
    api_keys_max_stale_seconds: int = 900
    """How long after the last successful read the keys still serve while reads fail;
    past it keyed requests get a 503 (a revoked key must not live on through an outage)."""
    openai_api_key_secret_arn: str | None = None
    cors_origins: tuple[str, ...] = ()
    idempotency_ttl_seconds: int = 86400
    idempotency_wait_seconds: float = 5.0
    stream_flush_ms: int = 250
    """How long a recorded stream's events wait before they are written (issue 13)."""
    stream_poll_ms: int = 100
    """How often a follower in another process reads a live recorded stream."""
    run_lease_seconds: int = 30
    """A run not heard from for this long is ended as failed by its next reader."""
    background_dispatch: str = "task"
    """`task` (a task of this process) or `lambda` (an asynchronous self-invocation)."""
    in_lambda: bool = False
    telemetry: bool = False
    """JSON logs and embedded metrics per request (on by default inside Lambda)."""

    def __post_init__(self) -> None:
        if self.api_keys_max_stale_seconds < self.api_keys_max_age_seconds:
            raise ValueError(
                "API_KEYS_MAX_STALE_SECONDS must be at least API_KEYS_MAX_AGE_SECONDS, got "
                f"{self.api_keys_max_stale_seconds} < {self.api_keys_max_age_seconds}"
            )

    @property
    def requires_keys(self) -> bool:
        return bool(self.api_keys or self.api_keys_secret_arn)

    @property
    def default_model(self) -> str:
        return next(iter(self.models))

    @classmethod
    def from_env(cls) -> Settings:
        provider = os.environ.get("MODEL_PROVIDER", "echo").strip().lower() or "echo"
        if provider not in DEFAULT_MODELS:
            raise ValueError(f"MODEL_PROVIDER must be one of {', '.join(DEFAULT_MODELS)}, got {provider!r}")
        models = parse_models(os.environ.get("MODELS", "")) or parse_models(DEFAULT_MODELS[provider])
        max_age = _int("API_KEYS_MAX_AGE_SECONDS", 300)
        return cls(
            sessions_table=os.environ.get("SESSIONS_TABLE", "").strip() or "threadline-sessions",
            model_provider=provider,
            models=models,
            history_window=_int("HISTORY_WINDOW", 40, minimum=1),
            session_ttl_days=_int("SESSION_TTL_DAYS", 30),
            listing_shards=_int("LISTING_SHARDS", 16, minimum=1),
            listing_interval_seconds=_int("LISTING_INTERVAL_SECONDS", 30),
            openai_base_url=os.environ.get("OPENAI_BASE_URL") or None,
            openai_api_key=os.environ.get("OPENAI_API_KEY") or None,
            openai_timeout_seconds=_int("OPENAI_TIMEOUT_SECONDS", 600, minimum=1),
            echo_delay_ms=_int("ECHO_DELAY_MS", 0),
            compaction=_flag("COMPACTION", default=True),
            compaction_threshold=_int("COMPACTION_THRESHOLD", 20, minimum=1),
            api_keys=_list("API_KEYS", newlines=True),
            api_keys_secret_arn=os.environ.get("API_KEYS_SECRET_ARN") or None,
            api_keys_max_age_seconds=max_age,
            # Unset, it follows a raised max age rather than refusing to start.
            api_keys_max_stale_seconds=_int("API_KEYS_MAX_STALE_SECONDS", max(900, max_age)),
            openai_api_key_secret_arn=os.environ.get("OPENAI_API_KEY_SECRET_ARN") or None,
            cors_origins=_list("CORS_ORIGINS"),
            idempotency_ttl_seconds=_int("IDEMPOTENCY_TTL_SECONDS", 86400, minimum=60),
            idempotency_wait_seconds=_int("IDEMPOTENCY_WAIT_MS", 5000) / 1000,
            stream_flush_ms=_int("STREAM_FLUSH_MS", 250, minimum=10),
            stream_poll_ms=_int("STREAM_POLL_MS", 100, minimum=10),
            run_lease_seconds=_int("RUN_LEASE_SECONDS", 30, minimum=3),
            background_dispatch=_choice(
                "BACKGROUND_DISPATCH",
                ("task", "lambda"),
                default="lambda" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "task",
            ),
            in_lambda=bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")),
            telemetry=_flag("TELEMETRY", default=bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; tests call `get_settings.cache_clear()` after changing the env."""
    return Settings.from_env()
