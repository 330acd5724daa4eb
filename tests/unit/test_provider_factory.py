"""`MODEL_PROVIDER` picks the provider; deployed, the upstream key comes from its secret."""

from __future__ import annotations

import pytest

from core.providers import create_provider
from core.providers.base import ModelRequest, TextDelta
from core.providers.echo import EchoProvider
from core.settings import Settings
from tests.fakes.openai_upstream import FakeUpstream, text


def test_echo_is_the_default() -> None:
    assert isinstance(create_provider(Settings()), EchoProvider)


async def test_the_openai_provider_reads_its_key_from_the_secret() -> None:
    from moto import mock_aws

    with mock_aws(), FakeUpstream(api_key="sk-from-the-secret") as upstream:
        import boto3

        arn = boto3.client("secretsmanager").create_secret(Name="upstream", SecretString="sk-from-the-secret\n")["ARN"]
        settings = Settings(
            model_provider="openai",
            models={"m": "m"},
            openai_base_url=upstream.base_url,
            openai_api_key_secret_arn=arn,
        )
        provider = create_provider(settings)
        upstream.push(text("hello there"))
        events = [
            event
            async for event in provider.stream(ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}]))
        ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello there"
    assert upstream.last.headers["authorization"] == "Bearer sk-from-the-secret"


def test_an_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError):
        create_provider(Settings(model_provider="llama"))
