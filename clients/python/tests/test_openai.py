"""The real `openai` package from PyPI through breakwater.openai's transports: plain and streamed, sync and async;
a fallback from a failing primary the SDK never sees; the SDK's own exceptions for daemon errors."""
from __future__ import annotations

import asyncio
from typing import Iterator

import httpx
import openai
import pytest

import breakwater.openai
from conftest import Daemon, Fake


def sdk(d: Daemon) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url="http://breakwater/v1", max_retries=0,
                         http_client=httpx.Client(transport=breakwater.openai.Transport(d.socket)))


def async_sdk(d: Daemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="unused", base_url="http://breakwater/v1", max_retries=0,
                              http_client=httpx.AsyncClient(transport=breakwater.openai.AsyncTransport(d.socket)))


MESSAGES = [{"role": "user", "content": "Hello there"}]


def test_a_plain_completion(daemon: Daemon) -> None:
    raw = sdk(daemon).chat.completions.with_raw_response.create(model="default", messages=MESSAGES)  # type: ignore
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert raw.headers["x-breakwater-provider"] == "fake"
    assert raw.headers["x-breakwater-attempts"] == "1"


def test_a_streamed_completion(fake: Fake, daemon: Daemon) -> None:
    fake.script({"chunks": 8})
    stream = sdk(daemon).chat.completions.create(model="default", messages=MESSAGES, stream=True)  # type: ignore
    chunks = list(stream)
    assert len(chunks) >= 8
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_async_plain_and_streamed(fake: Fake, daemon: Daemon) -> None:
    async def run() -> None:
        client = async_sdk(daemon)
        completion = await client.chat.completions.create(model="default", messages=MESSAGES)  # type: ignore
        assert completion.choices[0].message.content
        fake.script({"chunks": 5})
        stream = await client.chat.completions.create(model="default", messages=MESSAGES,  # type: ignore
                                                      stream=True)
        assert len([c async for c in stream]) >= 5

    asyncio.run(run())


@pytest.fixture
def two() -> Iterator[Daemon]:
    primary, backup = Fake(), Fake()
    primary.personality({"name": "down", "down": True})
    d = Daemon(primary, backup=backup)
    yield d
    d.stop()
    primary.stop()
    backup.stop()


def test_a_fallback_is_invisible_to_the_sdk(two: Daemon) -> None:
    raw = sdk(two).chat.completions.with_raw_response.create(model="chain", messages=MESSAGES)  # type: ignore
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-breakwater-provider"] == "backup"


def test_a_rate_limited_call_raises_the_sdks_rate_limit_error(fake: Fake, daemon: Daemon) -> None:
    # Every answer 429 with a minute's Retry-After: past the call's 2 s deadline, so the daemon gives up at once.
    fake.personality({"name": "limited", "default_step": {"status": 429, "retry_after": "60"}})
    with pytest.raises(openai.RateLimitError) as e:
        sdk(daemon).chat.completions.create(model="default", messages=MESSAGES,  # type: ignore
                                            extra_headers={"X-Breakwater-Timeout-Ms": "2000"})
    assert e.value.status_code == 429
    assert e.value.response.headers.get("retry-after")


def test_an_unknown_model_is_not_found(daemon: Daemon) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk(daemon).chat.completions.create(model="no-such-route", messages=MESSAGES)  # type: ignore


def test_an_unreachable_daemon_is_a_connection_error(daemon: Daemon) -> None:
    client = openai.OpenAI(api_key="unused", base_url="http://breakwater/v1", max_retries=0,
                           http_client=httpx.Client(transport=breakwater.openai.Transport(daemon.socket + ".none")))
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="default", messages=MESSAGES)  # type: ignore
