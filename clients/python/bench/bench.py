"""What the Python client plus the sidecar add to a call: `breakwater.Client` → breakwaterd → fake provider against
`httpx` → fake provider directly, at 1 and 32 calls in flight, in one run.

    swift build -c release
    python3 -m venv .build/python-venv && .build/python-venv/bin/pip install "./clients/python[test]"
    .build/python-venv/bin/python clients/python/bench/bench.py --bin-dir .build/release

Prints the machine, then per concurrency the calls/s and p50/p90/p99 of each path and the p50 the sidecar adds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, List, Tuple

import httpx

import breakwater

BODY = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}


def percentile(xs: List[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def run(concurrency: int, seconds: float, call: Callable[[], None]) -> Tuple[float, List[float]]:
    """Closed-loop load: `concurrency` threads calling for `seconds` (after a 1 s warm-up); calls/s, latencies."""
    latencies: List[float] = []
    lock = threading.Lock()
    phase = {"measuring": False, "stop": False}

    def worker() -> None:
        mine: List[float] = []
        while not phase["stop"]:
            t = time.perf_counter()
            call()
            if phase["measuring"]:
                mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    phase["measuring"] = True
    time.sleep(seconds)
    phase["stop"] = True
    for t in threads:
        t.join()
    return len(latencies) / seconds, latencies


def run_async(concurrency: int, seconds: float, make_call: Callable[[], Callable[[], "asyncio.Future[None]"]]
              ) -> Tuple[float, List[float]]:
    """The same closed loop with `concurrency` asyncio tasks on one event loop."""
    async def go() -> Tuple[float, List[float]]:
        call = make_call()
        latencies: List[float] = []
        phase = {"measuring": False, "stop": False}

        async def worker() -> None:
            while not phase["stop"]:
                t = time.perf_counter()
                await call()
                if phase["measuring"]:
                    latencies.append(time.perf_counter() - t)

        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        await asyncio.sleep(1.0)
        phase["measuring"] = True
        await asyncio.sleep(seconds)
        phase["stop"] = True
        await asyncio.gather(*tasks)
        return len(latencies) / seconds, latencies

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=str(pathlib.Path(__file__).resolve().parents[3] / ".build" / "release"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--provider-latency-ms", type=int, default=20)
    args = ap.parse_args()
    bins = pathlib.Path(args.bin_dir)
    tmp = tempfile.mkdtemp()
    personality = pathlib.Path(tmp, "p.json")
    # Rate-limit headers far above the load (as breakwater-bench does): the daemon paces under the limits a provider
    # announces, and the fake's default of 10,000 requests a minute would cap the sidecar at 166 calls/s.
    personality.write_text(json.dumps({"name": "bench", "default_step": {
        "delay_first_byte_ms": args.provider_latency_ms},
        "ratelimit_limit_requests": 1_000_000_000, "ratelimit_limit_tokens": 1_000_000_000_000}))
    fake = subprocess.Popen([str(bins / "fake-provider"), "--port", "0", "--personality", str(personality)],
                            stdout=subprocess.PIPE)
    assert fake.stdout is not None
    base_url = json.loads(fake.stdout.readline())["base_url"]
    sock = os.path.join(tmp, "bw.sock")
    config = pathlib.Path(tmp, "breakwater.yaml")
    config.write_text("providers:\n  fake:\n    kind: openai\n    base_url: %s\n    api_key_env: BW_KEY\n"
                      "    http_version: \"1.1\"\nroutes:\n  default:\n    - provider: fake\n"
                      "      model: gpt-4o-mini\n" % base_url)
    daemon = subprocess.Popen([str(bins / "breakwaterd"), "--config", str(config), "--socket", sock,
                               "--log-level", "warning"], env={**os.environ, "BW_KEY": "sk-bench"})
    try:
        client = breakwater.Client(sock)
        client.wait_ready(20)
        direct = httpx.Client(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        body = dict(BODY, model="gpt-4o-mini")

        def call_direct() -> None:
            r = direct.post(base_url + "/chat/completions", json=body, headers={"authorization": "Bearer sk-bench"})
            r.raise_for_status()
            r.json()

        def call_sidecar() -> None:
            client.send("default", BODY)

        print("python client bench: provider latency %d ms, %.0f s per phase" % (args.provider_latency_ms,
                                                                                 args.seconds))
        print("machine: %d cores, %s, Python %s, httpx %s" % (os.cpu_count() or 0, platform.processor() or
                                                               platform.machine(), platform.python_version(),
                                                               httpx.__version__))
        print("command: %s" % " ".join(sys.argv))
        for concurrency in (1, 32):
            rows = []
            for name, fn in (("httpx → fake", call_direct), ("breakwater → breakwaterd → fake", call_sidecar)):
                rate, lat = run(concurrency, args.seconds, fn)
                rows.append((name, rate, lat))
                print("  c=%-3d %-33s %7.0f calls/s  p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  (%d calls)"
                      % (concurrency, name, rate, 1000 * statistics.median(lat), 1000 * percentile(lat, 0.9),
                         1000 * percentile(lat, 0.99), len(lat)))
            added = 1000 * (statistics.median(rows[1][2]) - statistics.median(rows[0][2]))
            print("  c=%-3d added p50: %+.2f ms" % (concurrency, added))
        for concurrency in (1, 32):
            def direct_async() -> Callable[[], "asyncio.Future[None]"]:
                ac = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

                async def call() -> None:
                    r = await ac.post(base_url + "/chat/completions", json=body,
                                      headers={"authorization": "Bearer sk-bench"})
                    r.raise_for_status()
                    r.json()
                return call  # type: ignore[return-value]

            def sidecar_async() -> Callable[[], "asyncio.Future[None]"]:
                bc = breakwater.AsyncClient(sock)

                async def call() -> None:
                    await bc.send("default", BODY)
                return call  # type: ignore[return-value]

            rows = []
            for name, make in (("asyncio httpx → fake", direct_async),
                               ("asyncio breakwater → breakwaterd → fake", sidecar_async)):
                rate, lat = run_async(concurrency, args.seconds, make)
                rows.append((name, rate, lat))
                print("  c=%-3d %-40s %7.0f calls/s  p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  (%d calls)"
                      % (concurrency, name, rate, 1000 * statistics.median(lat), 1000 * percentile(lat, 0.9),
                         1000 * percentile(lat, 0.99), len(lat)))
            added = 1000 * (statistics.median(rows[1][2]) - statistics.median(rows[0][2]))
            print("  c=%-3d asyncio added p50: %+.2f ms" % (concurrency, added))
        client.close()
    finally:
        daemon.terminate()
        fake.terminate()
        daemon.wait(10)
        fake.wait(10)


if __name__ == "__main__":
    main()
