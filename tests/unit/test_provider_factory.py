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


async def test_buffered_answers_use_a_providers_non_streaming_call_where_it_has_one() -> None:
    from collections.abc import AsyncIterator

    from core.providers.base import Finish, ProviderEvent, run_to_end

    class TwoWays:
        name = "two-ways"

        async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
            yield TextDelta("streamed")
            yield Finish()

        async def complete(self, request: ModelRequest) -> list[ProviderEvent]:
            return [TextDelta("buffered"), Finish()]

    model_request = ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    events = [event async for event in run_to_end(TwoWays(), model_request)]
    assert events == [TextDelta("buffered"), Finish()]
    echo_events = [event async for event in run_to_end(EchoProvider(), model_request)]
    assert "".join(e.text for e in echo_events if isinstance(e, TextDelta)) == "Echo: hi (I was given 1 message.)"
