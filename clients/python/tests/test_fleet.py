"""Fleet limits (issue 16): three daemons standing in for three hosts share one provider key's rate limit
through a real redis-server (Debian's package, on a Unix socket, stopped by PID), against the fake provider's
token bucket."""
from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import tempfile
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import breakwater
from conftest import Daemon, Fake, chat, metric, wait_until

RPM = 600  # the cluster limit N: 10 requests a second, a second's worth at once


class Redis:
    """`redis-server` on a Unix socket in a temporary directory, no persistence."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "redis.sock")
        self.process: "subprocess.Popen[bytes] | None" = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.socket, "--dir", self.dir.name, "--save", "",
             "--appendonly", "no", "--logfile", os.path.join(self.dir.name, "redis.log")])
        assert wait_until(lambda: os.path.exists(self.socket), 10), "redis-server did not start"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        self.dir.cleanup()


def cluster_config(redis: Redis, name: str) -> str:
    return ("cluster:\n  redis: unix://%s\n  timeout: 100ms\n  daemon_id: %s\n"
            "limits: {max_concurrent_calls: 1000}\n" % (redis.socket, name))


@pytest.fixture()
def fleet() -> Iterator[Tuple[Fake, Redis, List[Daemon]]]:
    # The provider allows what the cluster limit allows: N a minute, a second's worth at once, per key.
    fake = Fake({"name": "bucket", "token_bucket": {"requests_per_minute": RPM, "burst_seconds": 1}})
    redis = Redis()
    daemons: List[Daemon] = []
    try:
        for name in ("host-a", "host-b", "host-c"):
            daemons.append(Daemon(fake, extra=cluster_config(redis, name),
                                  fake_options="rate_limits: {rpm: %d, burst_seconds: 1, scope: cluster}" % RPM))
        yield fake, redis, daemons
    finally:
        for d in daemons:
            d.stop()
        redis.close()
        fake.stop()


def cluster(d: Daemon) -> Dict[str, Any]:
    with breakwater.Client(d.socket) as c:
        status: Dict[str, Any] = c.admin("status")["cluster"]
        return status


async def offer(daemons: List[Daemon], per_daemon_per_second: float, seconds: float,
                timeout: float) -> Tuple[List[int], List[int], List[float]]:
    """Calls at a steady rate on every daemon (open loop, as apps on three hosts would send them): how many each
    daemon answered and refused, and how long every call took."""
    answered = [0] * len(daemons)
    refused = [0] * len(daemons)
    took: List[float] = []
    clients = [breakwater.AsyncClient(d.socket) for d in daemons]

    async def one(i: int) -> None:
        started = time.monotonic()
        try:
            await clients[i].send("default", chat("hello"), timeout=timeout)
            answered[i] += 1
        except (breakwater.RateLimited, breakwater.Timeout):
            # Not served within its deadline: refused for the rate limit, or given a key too late to finish.
            refused[i] += 1
        took.append(time.monotonic() - started)

    async def feed(i: int) -> None:
        tasks = []
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            tasks.append(asyncio.ensure_future(one(i)))
            n += 1
            await asyncio.sleep(max(0.0, start + n / per_daemon_per_second - time.monotonic()))
        await asyncio.gather(*tasks)

    await asyncio.gather(*(feed(i) for i in range(len(daemons))))
    return answered, refused, took


def sample_requests(fake: Fake, samples: List[Tuple[float, int]], stop: List[bool]) -> None:
    while not stop[0]:
        samples.append((time.monotonic(), fake.stats()["requests"]))
        time.sleep(0.25)


def busiest_minute(samples: List[Tuple[float, int]]) -> int:
    """The most requests the provider saw between two samples at most 60 s apart."""
    best = 0
    j = 0
    for i in range(len(samples)):
        while samples[i][0] - samples[j][0] > 60.0:
            j += 1
        best = max(best, samples[i][1] - samples[j][1])
    return best


def test_three_daemons_offered_3n_share_n_per_minute(fleet: Tuple[Fake, Redis, List[Daemon]]) -> None:
    fake, _, daemons = fleet
    assert wait_until(lambda: all(cluster(d)["live_daemons"] == 3 for d in daemons), 10)
    samples: List[Tuple[float, int]] = []
    stop = [False]

    async def run() -> Tuple[List[int], List[int], List[float]]:
        loop = asyncio.get_running_loop()
        sampler = loop.run_in_executor(None, sample_requests, fake, samples, stop)
        try:
            # 3N a minute in all (N each), for 2 minutes.
            return await offer(daemons, RPM / 60, 120, timeout=3)
        finally:
            stop[0] = True
            await sampler

    answered, refused, _ = asyncio.run(run())
    stats = fake.stats()
    minute = busiest_minute(samples)
    print("answered per daemon", answered, "refused", refused, "busiest minute", minute, "fake", stats)
    assert minute <= 1.02 * RPM, minute
    # The provider's bucket is the same size as the cluster limit: it never had to refuse a run of calls.
    assert stats["longest_rate_limited_run"] <= 2, stats
    assert stats["rate_limited"] <= 0.01 * stats["requests"], stats
    # The limit was used, not starved: two minutes of N plus the burst, give or take the edges.
    assert sum(answered) >= 0.9 * (2 * RPM), answered
    mean = sum(answered) / 3
    assert all(abs(a - mean) <= 0.2 * mean for a in answered), answered


def test_redis_stopped_mid_run_each_daemon_keeps_to_its_share(fleet: Tuple[Fake, Redis, List[Daemon]]) -> None:
    fake, redis, daemons = fleet
    assert wait_until(lambda: all(cluster(d)["live_daemons"] == 3 for d in daemons), 10)

    async def run() -> Tuple[List[int], List[int], List[float]]:
        loop = asyncio.get_running_loop()
        load = asyncio.ensure_future(offer(daemons, RPM / 60, 24, timeout=3))
        await asyncio.sleep(6)
        await loop.run_in_executor(None, redis.stop)
        stopped = time.monotonic()
        assert await loop.run_in_executor(None, lambda: wait_until(
            lambda: all(not cluster(d)["reachable"] for d in daemons), 5))
        print("all daemons saw the store gone after %.2f s" % (time.monotonic() - stopped))
        before = fake.stats()["requests"]
        await asyncio.sleep(10)
        during = fake.stats()["requests"] - before
        print("provider saw %d requests in 10 s without the store" % during)
        # Three daemons at a third of N each: the provider sees N, plus each daemon's share of the burst.
        assert during <= RPM / 6 + 3 * 10 / 3 + 3, during
        assert during >= 0.7 * RPM / 6, during
        out = daemons[0].cli("status")
        assert "UNREACHABLE" in out.stdout and "local share" in out.stdout, out.stdout
        assert metric(daemons[0], "breakwater_cluster_store_reachable") == 0
        await loop.run_in_executor(None, redis.start)
        assert await loop.run_in_executor(None, lambda: wait_until(
            lambda: all(cluster(d)["reachable"] for d in daemons), 5))
        return await load

    assert metric(daemons[0], "breakwater_cluster_store_reachable") == 1
    answered, refused, took = asyncio.run(run())
    assert metric(daemons[0], "breakwater_cluster_store_reachable") == 1
    assert metric(daemons[0], "breakwater_cluster_store_outages_total") == 1
    assert metric(daemons[0], "breakwater_cluster_live_daemons") == 3
    print("answered", answered, "refused", refused, "longest call %.2f s" % max(took))
    # No call waited on the store: each ended within its own 3 s deadline (and a little scheduling).
    assert max(took) < 3.5, max(took)
    assert all(a > 0 for a in answered)
    for d in daemons:
        assert cluster(d)["outages"] == 1
        log = pathlib.Path(d.dir.name, "daemon.log").read_text()
        assert "cluster store unreachable" in log and "cluster store reachable again" in log, log[-2000:]
