"""The Python client against the real daemon and fake provider: whole and streamed answers, many calls on one
connection from threads and from asyncio tasks, every way of cancelling, the error families, wait_ready."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List

import pytest

import breakwater
from conftest import Daemon, Fake, chat, wait_until


def test_a_whole_answer(daemon: Daemon) -> None:
    with breakwater.Client(daemon.socket) as client:
        answer = client.send("default", chat("hello"))
    assert answer.response["object"] == "chat.completion"
    assert answer.response["choices"][0]["message"]["content"]
    assert (answer.provider, answer.model, answer.attempts) == ("fake", "gpt-4o-mini", 1)
    assert answer.usage.total_tokens and answer.usage.total_tokens > 0
    assert answer.request_id.startswith("bw-")


def test_the_socket_comes_from_the_environment(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREAKWATER_SOCKET", daemon.socket)
    assert breakwater.Client().send("default", chat("env")).provider == "fake"


def test_a_stream_arrives_as_the_provider_sends_it(fake: Fake, daemon: Daemon) -> None:
    fake.script({"chunks": 10, "chunk_interval_ms": 100})
    client = breakwater.Client(daemon.socket)
    start = time.monotonic()
    arrivals: List[float] = []
    chunks: List[Dict[str, Any]] = []
    with client.stream("default", chat("stream")) as stream:
        for chunk in stream:
            arrivals.append(time.monotonic() - start)
            chunks.append(chunk)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(chunks) >= 10
    assert arrivals[0] < arrivals[-1] - 0.5, "the first chunk came well before the end: %s" % arrivals
    assert stream.usage is not None and stream.provider == "fake"


def test_100_concurrent_calls_from_threads_share_one_connection(daemon: Daemon) -> None:
    client = breakwater.Client(daemon.socket)
    results: List[str] = []
    errors: List[BaseException] = []

    def one(i: int) -> None:
        try:
            results.append(client.send("default", chat("call %d" % i)).provider)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 100
    status = client.admin("status")
    assert status["connections"] == 1, "every call went over one connection: %s" % status


def test_100_concurrent_calls_from_asyncio_tasks(daemon: Daemon) -> None:
    async def run() -> List[breakwater.Completion]:
        client = breakwater.AsyncClient(daemon.socket)
        answers = await asyncio.gather(*(client.send("default", chat("task %d" % i)) for i in range(100)))
        streamed = await client.stream("default", chat("and a stream"))
        assert [c async for c in streamed]
        client.close()
        return list(answers)

    answers = asyncio.run(run())
    assert len(answers) == 100 and all(a.provider == "fake" for a in answers)


def slow_stream(fake: Fake) -> None:
    """The next answer: 100 chunks 100 ms apart, 10 s the fake would go on sending if nobody stopped it."""
    fake.script({"chunks": 100, "chunk_interval_ms": 100})


def expect_aborted_upstream(fake: Fake, before: Dict[str, Any]) -> None:
    assert wait_until(lambda: fake.stats()["aborted"] == before["aborted"] + 1 and fake.stats()["in_flight"] == 0,
                      timeout=5), "the daemon stopped the upstream request: %s" % fake.stats()


def test_closing_a_stream_cancels_it_upstream(fake: Fake, daemon: Daemon) -> None:
    client = breakwater.Client(daemon.socket)
    before = fake.stats()
    slow_stream(fake)
    stream = client.stream("default", chat("slow"))
    next(stream)
    stream.close()
    expect_aborted_upstream(fake, before)


def test_breaking_out_of_a_stream_cancels_it_upstream(fake: Fake, daemon: Daemon) -> None:
    client = breakwater.Client(daemon.socket)
    before = fake.stats()
    slow_stream(fake)
    with client.stream("default", chat("slow")) as stream:
        for _ in stream:
            break
    expect_aborted_upstream(fake, before)


def test_cancelling_the_asyncio_task_cancels_the_call_upstream(fake: Fake, daemon: Daemon) -> None:
    before = fake.stats()
    fake.script({"delay_first_byte_ms": 10_000})

    async def run() -> None:
        client = breakwater.AsyncClient(daemon.socket)
        task = asyncio.ensure_future(client.send("default", chat("slow")))
        assert await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: fake.stats()["requests"] > before["requests"]))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    expect_aborted_upstream(fake, before)


def test_cancelling_an_async_stream_cancels_it_upstream(fake: Fake, daemon: Daemon) -> None:
    before = fake.stats()
    slow_stream(fake)

    async def run() -> None:
        client = breakwater.AsyncClient(daemon.socket)
        stream = await client.stream("default", chat("slow"))
        await stream.__anext__()
        await stream.aclose()

    asyncio.run(run())
    expect_aborted_upstream(fake, before)


def test_closing_the_client_cancels_its_calls_upstream(fake: Fake, daemon: Daemon) -> None:
    client = breakwater.Client(daemon.socket)
    before = fake.stats()
    slow_stream(fake)
    stream = client.stream("default", chat("slow"))
    next(stream)
    client.close()
    with pytest.raises(breakwater.DaemonUnavailable):
        for _ in stream:
            pass
    expect_aborted_upstream(fake, before)


def test_an_unknown_route_is_its_own_exception(daemon: Daemon) -> None:
    with pytest.raises(breakwater.UnknownRoute) as e:
        breakwater.Client(daemon.socket).send("nope", chat("x"))
    assert e.value.code == breakwater.ErrorCode.UNKNOWN_ROUTE
    assert isinstance(e.value, breakwater.BreakwaterError)


def test_a_failing_provider_is_an_upstream_error_with_its_status(fake: Fake, daemon: Daemon) -> None:
    fake.script({"status": 400}, {"status": 400}, {"status": 400})
    with pytest.raises(breakwater.UpstreamError) as e:
        breakwater.Client(daemon.socket).send("default", chat("x"))
    assert e.value.upstream_status == 400 and e.value.provider == "fake"


def test_a_stream_cut_midway_is_interrupted(fake: Fake, daemon: Daemon) -> None:
    fake.script({"chunks": 10, "reset_after_chunks": 3})
    got = 0
    with pytest.raises(breakwater.StreamInterrupted):
        for _ in breakwater.Client(daemon.socket).stream("default", chat("cut")):
            got += 1
    assert got >= 1


def test_a_stream_nobody_iterates_is_paused_in_the_daemon_then_arrives_whole(fake: Fake, daemon: Daemon) -> None:
    # About 0.5 MB: well past the 64 KiB of credit the client grants before the app reads.
    fake.script({"chunks": 100, "content": "word " * 100_000})
    client = breakwater.Client(daemon.socket)
    stream = client.stream("default", chat("long"))
    assert wait_until(lambda: client.admin("status")["calls_waiting_for_reader"] == 1)
    assert sum(1 for _ in stream) >= 100


def test_wait_ready(fake: Fake) -> None:
    d = Daemon(fake)
    try:
        breakwater.Client(d.socket).wait_ready(10)
    finally:
        d.stop()
    with pytest.raises(breakwater.DaemonUnavailable):
        breakwater.Client(d.socket).wait_ready(0.3)


def test_a_failed_call_carries_its_attempts(fake: Fake, daemon: Daemon) -> None:
    # retry_count 2 (the fixture's config): three attempts, two retries after a backoff, then it gives up.
    fake.script({"status": 503}, {"status": 503}, {"status": 503})
    with pytest.raises(breakwater.UpstreamError) as e:
        breakwater.Client(daemon.socket).send("default", chat("x"))
    attempts = e.value.attempts
    assert [a.outcome for a in attempts] == ["error_status"] * 3, attempts
    assert [a.then for a in attempts] == ["retried", "retried", "gave_up"]
    assert all(a.upstream_status == 503 and a.failure == "transient" and a.provider == "fake" for a in attempts)
    assert attempts[0].wait_ms is not None


def test_a_call_past_its_deadline_is_a_timeout(fake: Fake, daemon: Daemon) -> None:
    fake.script({"delay_first_byte_ms": 5000})
    with pytest.raises(breakwater.Timeout) as e:
        breakwater.Client(daemon.socket).send("default", chat("slow"), timeout=0.5)
    assert e.value.code == breakwater.ErrorCode.TIMEOUT


def test_a_provider_that_keeps_rate_limiting_is_rate_limited(fake: Fake, daemon: Daemon) -> None:
    # Every answer 429 asking for a minute: past the call's 2 s deadline, so the daemon says so at once.
    fake.personality({"name": "limited", "default_step": {"status": 429, "retry_after": "60"}})
    with pytest.raises(breakwater.RateLimited) as e:
        breakwater.Client(daemon.socket).send("default", chat("x"), timeout=2)
    assert e.value.code == breakwater.ErrorCode.RATE_LIMITED
    assert e.value.retry_after is not None and e.value.retry_after > 1
    assert e.value.attempts and e.value.attempts[0].upstream_status == 429
