"""The daemon's OpenAI-compatible HTTP front, on its own Unix socket: real `curl --unix-socket` and the real `openai`
package through `httpx.HTTPTransport(uds=...)` — no Breakwater code on the client side at all. The same calls as the
binary protocol (gate, retries, fallbacks, audit), OpenAI's error shapes, bad HTTP input, peer credentials and tokens,
and `/metrics` read with prometheus_client's own parser."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import breakwater
from conftest import Daemon, Fake, bin_dir, chat, wait_until

MESSAGES = [{"role": "user", "content": "Hello there"}]
URL = "http://breakwater/v1/chat/completions"


def body(route: str = "default", stream: bool = False) -> str:
    return json.dumps({"model": route, "messages": MESSAGES, "stream": stream})


def curl(d: Daemon, *args: str, as_nobody: bool = False) -> Tuple[int, Dict[str, str], str]:
    """curl against the HTTP socket: (status, headers, body)."""
    command = ["curl", "-sS", "-D", "-", "--unix-socket", d.http_socket, *args]
    if as_nobody:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    head, _, text = out.stdout.partition("\n\n")  # text mode reads CRLF as \n
    lines = head.split("\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, text


def sdk(d: Daemon, api_key: str = "unused") -> openai.OpenAI:
    """The OpenAI SDK as any app would set it up for a Unix socket: httpx's own transport, no Breakwater code."""
    return openai.OpenAI(api_key=api_key, base_url="http://breakwater/v1", max_retries=0,
                         http_client=httpx.Client(transport=httpx.HTTPTransport(uds=d.http_socket)))


def open_to_nobody(d: Daemon) -> None:
    """Lets uid 65534 reach the daemon's sockets (the test runs as root; the temporary directory is root's)."""
    os.chmod(d.dir.name, 0o755)
    os.chmod(d.http_socket, 0o666)
    os.chmod(d.socket, 0o666)


# MARK: curl


def test_curl_plain(daemon: Daemon) -> None:
    status, headers, text = curl(daemon, URL, "-H", "content-type: application/json", "-d", body())
    assert status == 200, text
    answer = json.loads(text)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Echo: Hello there"
    assert headers["content-type"] == "application/json"
    assert headers["x-breakwater-provider"] == "fake" and headers["x-breakwater-attempts"] == "1"
    assert headers["x-breakwater-request-id"]
    # `Expect: 100-continue` (curl sends it for large uploads, and waits up to 1 s for the go-ahead): it comes at once.
    long = json.dumps({"model": "default", "messages": [{"role": "user", "content": "x" * 4000}]})
    out = subprocess.run(["curl", "-sS", "--unix-socket", daemon.http_socket, URL, "-H", "Expect: 100-continue",
                          "-d", long, "-o", "/dev/null", "-w", "%{http_code} %{time_total}"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    assert out[0] == "200" and float(out[1]) < 0.5, out


def test_curl_streamed_chunks_arrive_before_the_end(fake: Fake, daemon: Daemon) -> None:
    fake.script({"chunks": 6, "chunk_interval_ms": 250})
    proc = subprocess.Popen(["curl", "-sS", "-N", "--unix-socket", daemon.http_socket, URL, "-d",
                             body(stream=True)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    events: List[Tuple[float, str]] = []
    for line in proc.stdout:
        if line.startswith("data: "):
            events.append((time.monotonic(), line[6:].strip()))
    proc.wait(10)
    assert events[-1][1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for _, e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: Hello there"
    first_content = next(t for t, e in events if '"content":"' in e and '"content":""' not in e)
    print("first content chunk %.2f s before [DONE]" % (events[-1][0] - first_content))
    assert events[-1][0] - first_content >= 0.75, "chunks are forwarded as they come, not at the end"


# MARK: the openai package


def test_openai_sdk_plain_and_streamed_with_a_fallback_it_never_sees() -> None:
    primary, backup = Fake(), Fake()
    d = Daemon(primary, backup=backup)
    try:
        primary.script({"status": 503}, {"status": 503}, {"status": 503})
        raw = sdk(d).chat.completions.with_raw_response.create(model="chain", messages=MESSAGES)  # type: ignore
        completion = raw.parse()
        assert completion.choices[0].message.content == "Echo: Hello there"
        assert raw.headers["x-breakwater-provider"] == "backup"
        assert raw.headers["x-breakwater-model"] == "gpt-4o"
        assert raw.headers["x-breakwater-attempts"] == "4"

        primary.script({"status": 503}, {"status": 503}, {"status": 503})
        backup.script({"chunks": 5})
        stream = sdk(d).chat.completions.create(model="chain", messages=MESSAGES, stream=True)  # type: ignore
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces) == "Echo: Hello there" and len(pieces) >= 5
        assert primary.stats()["requests"] == 6 and backup.stats()["requests"] == 2
    finally:
        d.stop()
        primary.stop()
        backup.stop()


def test_each_error_status_raises_the_sdks_exception(fake: Fake) -> None:
    d = Daemon(fake, retry="{retry_count: 2, backoff_base: 10ms, max_retry_wait: 1s}")
    try:
        client = sdk(d)

        def raised(**kwargs: Any) -> openai.APIStatusError:
            with pytest.raises(openai.APIStatusError) as e:
                client.chat.completions.create(**{"model": "default", "messages": MESSAGES, **kwargs})
            return e.value

        e = raised(model="no-such-route")
        assert isinstance(e, openai.NotFoundError) and e.code == "UNKNOWN_ROUTE", e
        e = raised(messages=[])
        assert isinstance(e, openai.BadRequestError) and e.code == "BAD_REQUEST", e
        fake.script({"status": 400, "error_code": "context_length_exceeded"})
        e = raised()
        assert isinstance(e, openai.BadRequestError) and e.code == "UPSTREAM_ERROR", e
        fake.script({"status": 429, "retry_after": "30"})  # a wait past the call's deadline: not waited out
        e = raised(extra_headers={"x-breakwater-timeout-ms": "2000"})
        assert isinstance(e, openai.RateLimitError) and e.code == "RATE_LIMITED", e
        assert e.response.headers["retry-after"] == "30"
        fake.script({"status": 503}, {"status": 503}, {"status": 503})
        e = raised()
        assert isinstance(e, openai.InternalServerError) and e.status_code == 503 and e.code == "UPSTREAM_ERROR"
        assert len(e.body["attempts"]) == 3, e.body  # type: ignore[index]
        assert e.response.headers["x-should-retry"] == "false", "the daemon already retried"
        # Connections reset before any byte (libcurl itself retries a reused connection once: enough of them).
        fake.script(*[{"reset_after_chunks": 0}] * 9)
        e = raised()
        assert e.status_code == 503 and e.code == "UPSTREAM_UNAVAILABLE", e
        urllib.request.urlopen(urllib.request.Request(fake.origin + "/_fake/script", method="DELETE"), timeout=5)
        fake.script({"delay_first_byte_ms": 3000})
        e = raised(extra_headers={"x-breakwater-timeout-ms": "300"})
        assert isinstance(e, openai.InternalServerError) and e.status_code == 504 and e.code == "TIMEOUT", e
    finally:
        d.stop()


def test_a_stream_that_fails_after_it_began_ends_with_an_error_event(fake: Fake, daemon: Daemon) -> None:
    fake.script({"chunks": 6, "reset_after_chunks": 2})
    out = subprocess.run(["curl", "-sS", "-N", "--unix-socket", daemon.http_socket, URL, "-d", body(stream=True)],
                         capture_output=True, text=True, timeout=30).stdout
    events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events, out
    last = json.loads(events[-1])
    assert last["error"]["code"] == "STREAM_INTERRUPTED", last
    assert len(events) >= 3, "the chunks before the cut reached the app"

    fake.script({"chunks": 6, "reset_after_chunks": 2})
    got: List[str] = []
    with pytest.raises(openai.APIError) as e:
        for c in sdk(daemon).chat.completions.create(model="default", messages=MESSAGES,  # type: ignore
                                                     stream=True):
            got.extend(ch.delta.content or "" for ch in c.choices)
    assert got and "stream cut after it began" in str(e.value.message)


def test_a_client_that_disconnects_mid_stream_cancels_the_call_upstream(fake: Fake, daemon: Daemon) -> None:
    fake.script({"chunks": 40, "chunk_interval_ms": 100})
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.http_socket)
    payload = body(stream=True).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    seen = b""
    while b"data: " not in seen:
        seen += s.recv(4096)
    assert fake.stats()["in_flight"] == 1
    s.close()
    assert wait_until(lambda: fake.stats()["aborted"] == 1, 5), fake.stats()
    assert fake.stats()["completed"] == 0, "the provider's answer was abandoned, not read to the end"


def test_200_concurrent_keep_alive_connections(fake: Fake, daemon: Daemon) -> None:
    payload = body().encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(payload) + payload)

    async def response(reader: asyncio.StreamReader) -> Tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
        return int(lines[0].split()[1]), await reader.readexactly(length)

    async def run() -> Tuple[List[int], int]:
        connections = [await asyncio.open_unix_connection(daemon.http_socket) for _ in range(200)]
        # All 200 are open: the daemon's gauge counts them (plus the connection asking).
        probe_reader, probe_writer = await asyncio.open_unix_connection(daemon.http_socket)
        probe_writer.write(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
        _, metrics = await response(probe_reader)
        probe_writer.close()
        open_now = next(int(s.value) for f in text_string_to_metric_families(metrics.decode())
                        for s in f.samples if s.name == "breakwater_connections")

        async def two_calls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> List[int]:
            statuses = []
            for _ in range(2):  # the second on the same connection: keep-alive
                writer.write(request)
                status, answer = await response(reader)
                assert json.loads(answer)["choices"][0]["message"]["content"] == "Echo: Hello there"
                statuses.append(status)
            writer.close()
            return statuses

        results = await asyncio.wait_for(asyncio.gather(*(two_calls(r, w) for r, w in connections)), 60)
        return [s for pair in results for s in pair], open_now

    statuses, open_now = asyncio.run(run())
    assert statuses == [200] * 400
    assert open_now >= 201, open_now
    assert fake.stats()["requests"] == 400


# MARK: bad HTTP input


def exchange(d: Daemon, data: bytes, then_wait: float = 0) -> bytes:
    """Sends raw bytes on a new connection and reads until the daemon closes it (at most 10 s)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(d.http_socket)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed on us mid-send; what it answered first is still readable
    if then_wait:
        time.sleep(then_wait)
    out = b""
    try:
        while True:
            piece = s.recv(65536)
            if not piece:
                return out
            out += piece
    finally:
        s.close()


def test_bad_http_input_gets_a_4xx_and_a_close_while_a_healthy_stream_carries_on(fake: Fake) -> None:
    d = Daemon(fake, extra="http:\n  request_timeout: 1s\nlimits:\n  max_body_bytes: 65536\n")
    try:
        fake.script({"chunks": 20, "chunk_interval_ms": 100})
        times: List[float] = []
        healthy: List[str] = []

        def stream() -> None:
            for c in sdk(d).chat.completions.create(model="default", messages=MESSAGES,  # type: ignore
                                                    stream=True):
                times.append(time.monotonic())
                healthy.extend(ch.delta.content or "" for ch in c.choices)

        t = threading.Thread(target=stream)
        t.start()
        assert wait_until(lambda: len(times) >= 2)

        cases = {
            "malformed request line": (b"GARBAGE\r\n\r\n", "400"),
            "oversized headers": (b"GET /healthz HTTP/1.1\r\nHost: b\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", "400"),
            "oversized body": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Length: 100000\r\n\r\n"
                               + b"{" * 1000, "413"),
            "length and chunked both (smuggling)": (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
            "slow-loris (head never finished)": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\n", "408"),
            "a body never finished": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Length: 100\r\n\r\n"
                                      b"{\"messages\":", "408"),
        }
        for name, (data, status) in cases.items():
            started = time.monotonic()
            answer = exchange(d, data)
            assert answer.startswith(b"HTTP/1.1 " + status.encode()), (name, answer[:200])
            assert time.monotonic() - started < 5, name
            print("%s: %s, then closed" % (name, answer.split(b"\r\n")[0].decode()))

        # Pipelining: answered in order, one at a time; nothing after a request that asked to close.
        pipelined = exchange(d, b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n" * 20
                             + b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
                             + b"GET /v1/models HTTP/1.1\r\nHost: b\r\n\r\n")
        assert pipelined.count(b"HTTP/1.1 200 OK") == 21, pipelined[-300:]
        assert b'"object":"list"' not in pipelined, "the request after Connection: close is not served"

        t.join(20)
        assert "".join(healthy) == "Echo: Hello there", healthy
        gaps = [b - a for a, b in zip(times, times[1:])]
        print("healthy stream: %d chunks, longest gap %.0f ms" % (len(times), max(gaps) * 1000))
        assert max(gaps) < 1.0, "the healthy stream never stalled behind the bad connections"
        status, _, _ = curl(d, "http://b/healthz")
        assert status == 200
    finally:
        d.stop()


# MARK: tokens and peer credentials


APP_TOKEN = "py-test-http-app-token-0123456789abcdef"
TCP_TOKEN = "py-test-http-tcp-token-0123456789abcdef"


def root_only_policy() -> str:
    digest = hashlib.sha256(APP_TOKEN.encode()).hexdigest()
    tcp_digest = hashlib.sha256(TCP_TOKEN.encode()).hexdigest()
    issued = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"""\
anonymous: deny
agents:
  app:
    agent_identity:
      credentials: [{{name: t1, token_sha256: {digest}, issued_at: {issued}, validity_window: 1h}}]
      uids: [0]
    scopes: {{actions: [chat.reply], routes: [default], models: ["*"]}}
    relationships: [{{agent_to_tenant: acme}}]
  tcp-app:
    agent_identity:
      credentials: [{{name: t1, token_sha256: {tcp_digest}, issued_at: {issued}, validity_window: 1h}}]
    scopes: {{actions: [chat.reply], routes: [default], models: ["*"]}}
    relationships: [{{agent_to_tenant: acme}}]
"""


def binary_outcome(d: Daemon, token: Optional[str], action: str = "chat.reply") -> str:
    try:
        with breakwater.Client(d.socket, credential=token) as c:
            c.send("default", chat("hi"), action=action, tenant="acme")
        return "ok"
    except breakwater.BreakwaterError as e:
        return e.code_name or type(e).__name__


def test_tokens_and_peer_credentials_are_checked_as_on_the_binary_socket(fake: Fake) -> None:
    d = Daemon(fake, policy=root_only_policy(), extra="http:\n  metrics_agents: [app]\n")
    try:
        open_to_nobody(d)

        def http(token: Optional[str], action: str = "chat.reply", as_nobody: bool = False) -> Tuple[int, str]:
            args = [URL, "-d", body(), "-H", "x-breakwater-action: " + action, "-H", "x-breakwater-tenant: acme"]
            if token is not None:
                args += ["-H", "Authorization: Bearer " + token]
            status, _, text = curl(d, *args, as_nobody=as_nobody)
            return status, json.loads(text)["error"]["code"] if status != 200 else "ok"

        assert http(APP_TOKEN) == (200, "ok") and binary_outcome(d, APP_TOKEN) == "ok"
        assert http(None) == (401, "UNAUTHENTICATED")
        assert binary_outcome(d, None) == "FORBIDDEN", "the binary socket refuses a call without a credential too"
        assert http("not-the-token") == (401, "UNAUTHENTICATED")
        assert binary_outcome(d, "not-the-token") == "UNAUTHENTICATED"
        assert http(APP_TOKEN, action="user.export") == (403, "FORBIDDEN")
        assert binary_outcome(d, APP_TOKEN, action="user.export") == "FORBIDDEN"
        # The right token from the wrong uid: refused on both sockets (SO_PEERCRED).
        assert http(APP_TOKEN, as_nobody=True) == (401, "UNAUTHENTICATED")
        nobody = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(bin_dir() / "breakwater"),
             "call", "--socket", d.socket, "--message", "hi", "--action", "chat.reply", "--tenant", "acme"],
            capture_output=True, text=True, timeout=30, env={**os.environ, "BREAKWATER_TOKEN": APP_TOKEN})
        assert nobody.returncode != 0 and "UNAUTHENTICATED" in nobody.stdout + nobody.stderr, nobody
        # With the SDK: its api_key is the agent token.
        answer = sdk(d, api_key=APP_TOKEN).chat.completions.create(  # type: ignore
            model="default", messages=MESSAGES, extra_headers={"x-breakwater-action": "chat.reply",
                                                               "x-breakwater-tenant": "acme"})
        assert answer.choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            sdk(d, api_key="wrong").chat.completions.create(model="default", messages=MESSAGES)  # type: ignore
        with pytest.raises(openai.PermissionDeniedError):
            sdk(d, api_key=APP_TOKEN).chat.completions.create(  # type: ignore
                model="default", messages=MESSAGES, extra_headers={"x-breakwater-action": "user.export",
                                                                   "x-breakwater-tenant": "acme"})
        # Per-agent series only for the agents http.metrics_agents names: calls on both sockets count.
        _, _, text = curl(d, "http://b/metrics")
        m = metric_samples(text)
        agent_ok = m.get(("breakwater_agent_calls_total", (("agent", "app"), ("outcome", "ok"))))
        assert agent_ok == 3, sorted(k for k in m if k[0].startswith("breakwater_agent"))
        assert m.get(("breakwater_agent_tokens_total", (("agent", "app"), ("type", "output")))), "tokens by agent"
        assert not any(dict(ls).get("agent") == "tcp-app" for (_, ls) in m)
    finally:
        d.stop()


# MARK: models, health, metrics


def test_models_and_health(daemon: Daemon) -> None:
    models = sdk(daemon).models.list()
    assert [m.id for m in models] == ["default"]
    status, _, text = curl(daemon, "http://b/healthz")
    assert status == 200 and json.loads(text) == {"status": "ready", "routes": {"default": {"ready": True}}}


def metric_samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Every sample, by name and labels, as prometheus_client's parser reads the exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_exactly_what_happened_and_are_for_admins(fake: Fake) -> None:
    d = Daemon(fake, retry="{retry_count: 1, backoff_base: 10ms}",
               fake_options="circuit_breaker: {failure_threshold: 2, timeout_period: 60s}")
    try:
        client = sdk(d)
        for _ in range(3):  # answered at once
            client.chat.completions.create(model="default", messages=MESSAGES)  # type: ignore
        for _ in range(2):  # answered after one retry
            fake.script({"status": 503}, {})
            client.chat.completions.create(model="default", messages=MESSAGES)  # type: ignore
        fake.script({"chunks": 4})
        list(client.chat.completions.create(model="default", messages=MESSAGES, stream=True))  # type: ignore
        for _ in range(2):  # both attempts fail: two failed calls in a row open the breaker
            fake.script({"status": 503}, {"status": 503})
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="default", messages=MESSAGES)  # type: ignore
        with pytest.raises(openai.InternalServerError) as refused:  # the breaker is open: no attempt
            client.chat.completions.create(model="default", messages=MESSAGES)  # type: ignore
        assert fake.stats()["requests"] == 3 + 4 + 1 + 4

        status, headers, text = curl(d, "http://b/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        m = metric_samples(text)

        def total(name: str, **labels: str) -> float:
            return sum(v for (n, ls), v in m.items() if n == name and labels.items() <= dict(ls).items())

        assert total("breakwater_calls_total", route="default", outcome="ok") == 6
        assert total("breakwater_calls_total", route="default", outcome="UPSTREAM_ERROR".lower()) == 2
        assert total("breakwater_calls_total", route="default") == 9, refused.value
        assert total("breakwater_upstream_attempts_total", provider="fake", outcome="ok") == 6
        assert total("breakwater_upstream_attempts_total", provider="fake") == 12
        assert total("breakwater_retries_total", provider="fake") == 4
        assert total("breakwater_circuit_breaker_transitions_total", provider="fake", to="open") == 1
        assert total("breakwater_circuit_breaker_state", provider="fake", model="gpt-4o-mini") == 2
        assert total("gen_ai_client_operation_duration_seconds_count", breakwater_provider="fake") == 12
        assert total("gen_ai_server_time_to_first_token_seconds_count", breakwater_provider="fake") == 1
        assert total("gen_ai_client_token_usage_count", gen_ai_token_type="output") == 6
        assert total("gen_ai_client_token_usage_sum", gen_ai_token_type="input") > 0
        assert total("breakwater_calls_in_flight") == 0
        assert not any("request_id" in dict(ls) for (_, ls) in m), "no per-request labels"

        open_to_nobody(d)
        status, _, text = curl(d, "http://b/metrics", as_nobody=True)
        assert status == 403 and json.loads(text)["error"]["code"] == "FORBIDDEN"
    finally:
        d.stop()


# MARK: socket activation


def test_the_http_socket_from_systemd_socket_activate(fake: Fake, daemon: Daemon) -> None:
    """systemd-socket-activate passes both sockets, named as the unit files name them (FileDescriptorName=);
    the daemon starts on the first connection, which is an HTTP one."""
    base = daemon.dir.name
    config = os.path.join(base, "breakwater.yaml")
    sock, http_sock = os.path.join(base, "activated.sock"), os.path.join(base, "activated-http.sock")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", sock, "-l", http_sock, "--fdname=breakwater:http",
                             "-E", "BW_TEST_KEY=sk-test", str(bin_dir() / "breakwaterd"), "--config", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: os.path.exists(http_sock), 10)
        with httpx.Client(transport=httpx.HTTPTransport(uds=http_sock), timeout=20) as c:
            r = c.post(URL, content=body())
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Echo: Hello there"
        with breakwater.Client(sock) as b:  # the binary socket is the other one
            assert b.send("default", chat("hi")).response["choices"][0]["message"]["content"] == "Echo: hi"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "http=socket from systemd" in err, err[-2000:]


# MARK: approvals and the TCP listener


def test_a_pending_approval_holds_the_request_open_and_streams_say_so(fake: Fake) -> None:
    from test_daemon_life import REFUND_TOKEN, policy

    d = Daemon(fake, policy=policy())
    try:
        headers = ["-H", "Authorization: Bearer " + REFUND_TOKEN, "-H", "x-breakwater-action: refund.issue",
                   "-H", "x-breakwater-tenant: acme"]
        proc = subprocess.Popen(["curl", "-sS", "-N", "--unix-socket", d.http_socket, URL, "-d", body(stream=True),
                                 *headers], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        comment = proc.stdout.readline()
        assert comment.startswith(": ") and "breakwater approve apr-" in comment, comment
        assert fake.stats()["requests"] == 0, "nothing reaches the provider before the approval"
        approval = comment.split("breakwater approve ")[1].split()[0]
        approved = d.cli("approve", approval)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        rest = proc.stdout.read()
        proc.wait(10)
        assert rest.rstrip().endswith("data: [DONE]"), rest[-300:]

        # A plain request is simply held open until someone decides.
        result: List[Any] = []
        client = sdk(d, api_key=REFUND_TOKEN)
        t = threading.Thread(target=lambda: result.append(client.chat.completions.create(  # type: ignore
            model="default", messages=MESSAGES,
            extra_headers={"x-breakwater-action": "refund.issue", "x-breakwater-tenant": "acme"})))
        t.start()
        assert wait_until(lambda: "apr-" in d.cli("approvals").stdout), "the call waits for an approval"
        listed = d.cli("approvals").stdout
        approval = next(w for w in listed.split() if w.startswith("apr-"))
        assert not result, "no answer before the approval"
        assert d.cli("approve", approval).returncode == 0
        t.join(20)
        assert result and result[0].choices[0].message.content == "Echo: Hello there", result
    finally:
        d.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_loopback_tcp_listener_needs_a_policy_and_a_token_on_every_call(fake: Fake) -> None:
    port = free_port()
    d = Daemon(fake, policy=root_only_policy(), extra="http:\n  tcp: 127.0.0.1:%d\n" % port)
    try:
        url = "http://127.0.0.1:%d/v1/chat/completions" % port
        with httpx.Client(timeout=20) as c:
            headers = {"x-breakwater-action": "chat.reply", "x-breakwater-tenant": "acme"}
            assert c.post(url, content=body(), headers=headers).status_code == 401
            bound = c.post(url, content=body(), headers={**headers, "authorization": "Bearer " + APP_TOKEN})
            # That agent's token is bound to uid 0: on TCP there is no uid, so even the right token is refused.
            assert bound.status_code == 401 and bound.json()["error"]["code"] == "UNAUTHENTICATED", bound.text
            ok = c.post(url, content=body(), headers={**headers, "authorization": "Bearer " + TCP_TOKEN})
            assert ok.status_code == 200 and ok.headers["x-breakwater-provider"] == "fake", ok.text
            assert c.get("http://127.0.0.1:%d/metrics" % port).status_code == 403, "no admins on TCP"
    finally:
        d.stop()
    # Without a policy the daemon refuses to start: TCP callers would have no identity at all.
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "tcp.yaml")
        with open(config, "w") as f:
            f.write("http:\n  tcp: 127.0.0.1:%d\n" % port)
        out = subprocess.run([str(bin_dir() / "breakwaterd"), "--config", config, "--socket",
                              os.path.join(tmp, "s")], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "http.tcp needs a policy" in out.stderr, out.stderr


def test_a_graceful_stop_lets_an_http_stream_in_flight_finish(fake: Fake, daemon: Daemon) -> None:
    fake.script({"chunks": 10, "chunk_interval_ms": 150})
    proc = subprocess.Popen(["curl", "-sS", "-N", "--unix-socket", daemon.http_socket, URL, "-d", body(stream=True)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("data: "), first
    daemon.process.terminate()  # SIGTERM: drain
    rest = proc.stdout.read()
    proc.wait(10)
    assert rest.rstrip().endswith("data: [DONE]"), rest[-300:]
    assert daemon.process.wait(30) == 0


def test_an_http_client_that_stops_reading_pauses_its_stream_upstream(fake: Fake, daemon: Daemon) -> None:
    """The same flow control as the binary protocol's per-connection bound: past 1 MiB unsent to the app, the call
    stops reading its provider; the daemon does not buffer the answer. (25 MB, so that what the kernel's socket
    buffers hold on the way is a small part of it.)"""
    fake.script({"content": "word " * 4_000_000, "chunks": 20_000})
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(daemon.http_socket)
        payload = body(stream=True).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n" % len(payload)
                  + payload)

        def status() -> Dict[str, Any]:
            return json.loads(daemon.cli("status", "--json").stdout)  # type: ignore[no-any-return]

        assert wait_until(lambda: status()["calls_waiting_for_reader"] == 1, 20), status()
        first = status()["upstream_body_bytes"]
        time.sleep(1)  # paused: nothing more is read from the provider
        again = status()["upstream_body_bytes"]
        print("paused after reading %.1f MB of the provider's ~25 MB; a second later %.1f MB"
              % (first / 1e6, again / 1e6))
        assert again == first and again < 15_000_000, (first, again)
        assert fake.stats()["completed"] == 0
    finally:
        s.close()
    assert wait_until(lambda: fake.stats()["aborted"] == 1, 10), fake.stats()
    assert wait_until(lambda: status()["calls_waiting_for_reader"] == 0 and status()["calls_in_flight"] == 0)
