"""Fleet limits (issue 16): three daemons standing in for three hosts share one provider key's rate limit
through a real redis-server (Debian's package, on a Unix socket, stopped by PID), against the fake provider's
token bucket."""
from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import breakwater
from conftest import Daemon, Fake, chat, metric, wait_until

RPM = 600  # the cluster limit N: 10 requests a second, a second's worth at once


class Redis:
    """`redis-server` on a Unix socket in a temporary directory; `persist`: an append-only file fsynced on every
    write (what cluster budgets need to survive a restart of Redis; the README says so), else no persistence."""

    def __init__(self, persist: bool = False) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "redis.sock")
        self.process: "subprocess.Popen[bytes] | None" = None
        self.persist = persist
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.socket, "--dir", self.dir.name, "--save", "",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--logfile", os.path.join(self.dir.name, "redis.log")])
        assert wait_until(lambda: os.path.exists(self.socket) and self.ping(), 10), "redis-server did not start"

    def ping(self) -> bool:
        out = subprocess.run(["redis-cli", "-s", self.socket, "PING"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() == "PONG"

    def hash(self, key: str) -> Dict[str, int]:
        """A budget's counts: `ut` `um` used tokens and micro-dollars, `ht` `hm` held (0 when not there)."""
        fields = ["ut", "um", "ht", "hm"]
        out = subprocess.run(["redis-cli", "-s", self.socket, "HMGET", key, *fields], capture_output=True,
                             text=True, timeout=10)
        values = out.stdout.splitlines()
        return {f: int(v) if v.strip().lstrip("-").isdigit() else 0 for f, v in zip(fields, values)}

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


# -- Cluster budgets ------------------------------------------------------------------------------------------

CAP = 40_000  # tokens a day for tenant acme, across the three daemons
TOKEN = "py-test-fleet-agent-token-0123456789abcdef"


def budget_policy() -> str:
    issued = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return f"""\
anonymous: deny
agents:
  worker:
    agent_identity:
      credentials: [{{name: t1, token_sha256: {digest}, issued_at: {issued}, validity_window: 1h}}]
    scopes: {{actions: ["*"], routes: [default], models: ["*"]}}
    relationships: [{{agent_to_tenant: acme}}]
tenants:
  acme:
    budgets: {{scope: cluster, daily: {{tokens: {CAP}}}}}
"""


def test_a_cluster_budget_is_never_overspent_by_three_daemons_through_restarts() -> None:
    """Twelve callers on three daemons spend one tenant's cluster budget while one daemon is SIGKILLed and
    restarted and Redis is stopped and started again: the fake provider's billed usage never passes the cap, the
    store's count survives Redis' restart, and every daemon ends refusing with BUDGET_EXCEEDED."""
    # 200 ms an answer, so twelve callers spend ~6,000 tokens a second: the restarts happen mid-run.
    fake = Fake({"name": "steady", "default_step": {"delay_first_byte_ms": 200}})
    redis = Redis(persist=True)
    daemons = [Daemon(fake, extra=cluster_config(redis, name), policy=budget_policy())
               for name in ("host-a", "host-b", "host-c")]
    key = "breakwater:budget:tenant:acme:daily:" + datetime.now(timezone.utc).strftime("%Y-%m-%d")
    stop = threading.Event()
    lock = threading.Lock()
    answered = [0, 0, 0]
    refused = [0, 0, 0]
    served_down = 0
    last_refused: Dict[Tuple[int, int], int] = {}  # consecutive refusals per caller
    # ~50 prompt words (the fake bills words) and max_tokens 200: each call holds ~280 tokens, uses ~100.
    body = dict(chat("spend " * 50), max_tokens=200)

    def caller(d: int, n: int) -> None:
        client: "breakwater.Client | None" = None
        while not stop.is_set():
            try:
                if client is None:
                    client = breakwater.Client(daemons[d].socket, credential=TOKEN)
                client.send("default", body, tenant="acme", timeout=5)
                with lock:
                    answered[d] += 1
                    last_refused[(d, n)] = 0
            except breakwater.BudgetExceeded:
                with lock:
                    refused[d] += 1
                    last_refused[(d, n)] = last_refused.get((d, n), 0) + 1
                time.sleep(0.02)
            except Exception:  # the daemon was killed under it: a new connection to its successor
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.05)
        if client is not None:
            client.close()

    def billed() -> int:
        return int(fake.stats()["usage_tokens"])

    threads = [threading.Thread(target=caller, args=(d, n)) for d in range(3) for n in range(4)]
    try:
        for t in threads:
            t.start()
        assert wait_until(lambda: billed() >= 5_000, 60), billed()
        daemons[0].kill_and_restart()  # its holds in flight lapse in the store and are charged in full
        assert wait_until(lambda: billed() >= 12_000, 60), billed()
        before = redis.hash(key)
        redis.stop()
        assert wait_until(lambda: all(not cluster(d)["reachable"] for d in daemons), 10)
        spent_down = billed()
        # Served on each daemon's local share of what was left while Redis is gone.
        assert wait_until(lambda: billed() >= spent_down + 500, 10), (spent_down, billed())
        served_down = billed() - spent_down
        redis.start()
        assert wait_until(lambda: all(cluster(d)["reachable"] for d in daemons), 10)
        after = redis.hash(key)
        assert after.get("ut", 0) >= before.get("ut", 0), (before, after)  # the count survived the restart
        # Every caller refused three times running, with the store answering: the cap is spent.
        assert wait_until(lambda: len(last_refused) == 12 and all(v >= 3 for v in last_refused.values()), 90), \
            (last_refused, billed())
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        store = redis.hash(key) if redis.process is not None else {}
        total = billed()
        for d in daemons:
            d.stop()
        redis.close()
        fake.stop()
    print("billed %d of %d; answered %s, refused %s; store %s; %d billed while Redis was down"
          % (total, CAP, answered, refused, store, served_down))
    assert total <= CAP, "spent %d tokens against a cap of %d" % (total, CAP)
    assert total >= CAP - 6_000, "the cap was not reached: %d" % total
    # Everything billed is in the store (the killed daemon's lapsed holds may count more than they used).
    assert store.get("ut", 0) + store.get("ht", 0) >= total, store
    assert all(r > 0 for r in refused), refused
