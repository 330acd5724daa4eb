"""Model providers behind one interface (`base.ModelProvider`), chosen by `MODEL_PROVIDER`.

Each provider module is imported only when selected, so `echo` deployments never
import the `openai` package and `openai` deployments never load Bedrock's models.
"""

from __future__ import annotations

from core.providers.base import ModelProvider
from core.settings import Settings


def create_provider(settings: Settings) -> ModelProvider:
    if settings.model_provider == "echo":
        from core.providers.echo import EchoProvider

        return EchoProvider(delay_seconds=settings.echo_delay_ms / 1000)
    if settings.model_provider == "openai":
        from core.providers.openai_compat import OpenAIProvider

        return OpenAIProvider(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key or _secret(settings.openai_api_key_secret_arn),
            timeout_seconds=settings.openai_timeout_seconds,
        )
    if settings.model_provider == "bedrock":
        from core.providers.bedrock import BedrockProvider

        return BedrockProvider()
    raise ValueError(f"unknown MODEL_PROVIDER {settings.model_provider!r}")


def _secret(arn: str | None) -> str | None:
    """The upstream's key from Secrets Manager (deployed), read once per container."""
    if not arn:
        return None
    from core.secrets import read_secret

    return read_secret(arn).strip()
