"""Connection pools as config (issue 15): a provider's `max_connections` is how many calls to it run at once over
HTTP/1.1; calls past it wait, shown in `breakwater status`, within their deadline."""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any, Dict, List

import pytest

import breakwater
from conftest import Daemon, Fake, chat, metric, wait_until


def pool(client: breakwater.Client, provider: str = "fake") -> Dict[str, Any]:
    pools: List[Dict[str, Any]] = client.admin("status")["upstream_pools"]
    return next(p for p in pools if p["provider"] == provider)


def test_1000_calls_to_an_http1_provider_with_max_connections_1000_all_run_at_once() -> None:
    # Every answer waits 6 s for its first byte, so all 1,000 are in the fake at once or the limit held some back.
    fake = Fake({"name": "slow", "default_step": {"delay_first_byte_ms": 6000}})
    daemon = Daemon(fake, fake_options="max_connections: 1000", extra="limits: {max_concurrent_calls: 1000}\n")
    try:
        peak = {"fake": 0, "running": 0}

        async def run() -> List[breakwater.Completion]:
            client = breakwater.AsyncClient(daemon.socket)
            calls = asyncio.gather(*(client.send("default", chat("call %d" % i), timeout=60) for i in range(1000)))

            def watch() -> None:
                with breakwater.Client(daemon.socket) as admin:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and peak["fake"] < 1000:
                        peak["fake"] = max(peak["fake"], fake.stats()["in_flight"])
                        peak["running"] = max(peak["running"], pool(admin)["running"])
                        time.sleep(0.05)

            watcher = asyncio.get_running_loop().run_in_executor(None, watch)
            answers = await calls
            await watcher
            return answers

        answers = asyncio.run(run())
        assert len(answers) == 1000
        assert all(a.response["choices"][0]["message"]["content"] for a in answers)
        assert peak["fake"] == 1000, peak
        assert peak["running"] == 1000, peak
        assert fake.stats()["requests"] == 1000
    finally:
        daemon.stop()
        fake.stop()


def test_calls_past_max_connections_wait_in_status_and_time_out_waiting_with_a_clear_error() -> None:
    fake = Fake({"name": "slow", "default_step": {"delay_first_byte_ms": 2000}})
    daemon = Daemon(fake, fake_options="max_connections: 2", retry="{retry_count: 0}")
    try:
        with breakwater.Client(daemon.socket) as client, concurrent.futures.ThreadPoolExecutor(8) as pool_threads:
            running = [pool_threads.submit(client.send, "default", chat("held %d" % i)) for i in range(5)]
            assert wait_until(lambda: pool(client)["waiting"] == 3, 10), pool(client)
            snapshot = pool(client)
            assert (snapshot["limit"], snapshot["running"]) == (2, 2)
            assert fake.stats()["in_flight"] == 2
            shown = daemon.cli("status")
            assert shown.returncode == 0, shown.stderr
            assert "fake  2/2 calls running, 3 waiting for a connection" in shown.stdout, shown.stdout
            assert metric(daemon, "breakwater_upstream_calls_running", {"provider": "fake"}) == 2
            assert metric(daemon, "breakwater_upstream_calls_waiting", {"provider": "fake"}) == 3

            # A call whose deadline comes while it still waits: TIMEOUT, saying so, and never sent.
            started = time.monotonic()
            with pytest.raises(breakwater.Timeout) as caught:
                client.send("default", chat("too late"), timeout=0.5)
            assert 0.4 < time.monotonic() - started < 1.9
            assert "waiting for a connection" in str(caught.value), str(caught.value)

            answers = [f.result(timeout=30) for f in running]
            assert all(a.response["choices"][0]["message"]["content"] for a in answers)
            assert fake.stats()["requests"] == 5
            final = pool(client)
            assert (final["running"], final["waiting"]) == (0, 0)
            assert final["waited_total"] == 4
    finally:
        daemon.stop()
        fake.stop()
