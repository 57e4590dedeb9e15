"""A real `fake-provider` and `breakwaterd` for the client tests (the binaries from `swift build`, or the directory
in $BREAKWATER_BIN_DIR), on a temporary Unix socket."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import tempfile
import time
import urllib.request
from typing import Any, Dict, Iterator, Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families

import breakwater

ROOT = pathlib.Path(__file__).resolve().parents[3]


def bin_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("BREAKWATER_BIN_DIR", str(ROOT / ".build" / "debug")))


class Fake:
    """The fake provider: its base URL, its stats and personality over its control endpoints."""

    def __init__(self, personality: Optional[Dict[str, Any]] = None) -> None:
        args = [str(bin_dir() / "fake-provider"), "--port", "0"]
        self._dir = tempfile.TemporaryDirectory()
        if personality is not None:
            path = pathlib.Path(self._dir.name) / "personality.json"
            path.write_text(json.dumps(personality))
            args += ["--personality", str(path)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        info = json.loads(line)
        self.base_url: str = info["base_url"]
        self.origin: str = info["origin"]

    def stats(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.origin + "/_fake/stats", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def script(self, *steps: Dict[str, Any]) -> None:
        """The next requests' answers, one step each (status, delays, chunks, faults; see FaultStep)."""
        self._post("/_fake/script", list(steps))

    def personality(self, p: Dict[str, Any]) -> None:
        self._post("/_fake/personality", p)

    def _post(self, path: str, body: Any) -> None:
        req = urllib.request.Request(self.origin + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._dir.cleanup()


class Daemon:
    """`breakwaterd` on a temporary socket, with the fake as provider `fake` (route `default`) and whatever else
    `extra` adds to the config."""

    def __init__(self, fake: Fake, extra: str = "", retry: str = "{retry_count: 2, backoff_base: 10ms}",
                 backup: Optional[Fake] = None, policy: Optional[str] = None, fake_options: str = "",
                 state: bool = False) -> None:
        """`backup`: a second provider, and route `chain`: [fake, backup]. `policy`: a policy file's text.
        `fake_options`: more keys of provider `fake` (e.g. `circuit_breaker: {...}`). `state`: a state directory
        (budgets, breakers, pending approvals survive a restart)."""
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "bw.sock")
        # The OpenAI-compatible HTTP front, on its own socket.
        self.http_socket = os.path.join(self.dir.name, "http.sock")
        config = os.path.join(self.dir.name, "breakwater.yaml")
        pathlib.Path(config).write_text(
            "providers:\n"
            "  fake:\n"
            "    kind: openai\n"
            "    base_url: %s\n"
            "    api_key_env: BW_TEST_KEY\n"
            "    http_version: \"1.1\"\n"
            "    retry_config: %s\n"
            "%s"
            "%s"
            "routes:\n"
            "  default:\n"
            "    - provider: fake\n"
            "      model: gpt-4o-mini\n"
            "%s"
            "%s" % (fake.base_url, retry, "".join("    %s\n" % line for line in fake_options.splitlines()),
                    "" if backup is None else
                    "  backup:\n    kind: openai\n    base_url: %s\n    api_key_env: BW_TEST_KEY\n"
                    "    http_version: \"1.1\"\n" % backup.base_url,
                    "" if backup is None else
                    "  chain:\n    - provider: fake\n      model: gpt-4o-mini\n    - provider: backup\n"
                    "      model: gpt-4o\n",
                    extra))
        self.arguments = [str(bin_dir() / "breakwaterd"), "--config", config, "--socket", self.socket,
                          "--http-socket", self.http_socket]
        if state:
            self.arguments += ["--state-dir", os.path.join(self.dir.name, "state")]
        if policy is not None:
            pathlib.Path(self.dir.name, "policy.yaml").write_text(policy)
            self.arguments += ["--policy", os.path.join(self.dir.name, "policy.yaml")]
        self.log = open(os.path.join(self.dir.name, "daemon.log"), "ab")
        self.process = self._spawn()

    def _spawn(self) -> "subprocess.Popen[bytes]":
        process = subprocess.Popen(self.arguments, env={**os.environ, "BW_TEST_KEY": "sk-test"}, stdout=self.log,
                                   stderr=subprocess.STDOUT)
        with breakwater.Client(self.socket) as probe:
            probe.wait_ready(20)
        return process

    def kill_and_restart(self) -> None:
        """SIGKILL (no GOAWAY: calls in flight are cut), then a new daemon on the same socket."""
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = self._spawn()

    def cli(self, *args: str) -> "subprocess.CompletedProcess[str]":
        """The `breakwater` CLI against this daemon."""
        return subprocess.run([str(bin_dir() / "breakwater"), *args, "--socket", self.socket], capture_output=True,
                              text=True, timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.log.close()
        self.dir.cleanup()


def metric(daemon: "Daemon", name: str, labels: Optional[Dict[str, str]] = None) -> Optional[float]:
    """The sample `name` with exactly `labels` (none by default) from the daemon's `/metrics` on its HTTP front,
    read with Prometheus' own parser (the tests run as root, an admin); None when it is not there."""
    out = subprocess.run(["curl", "-sS", "--unix-socket", daemon.http_socket, "http://b/metrics"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for family in text_string_to_metric_families(out.stdout):
        for sample in family.samples:
            if sample.name == name and sample.labels == (labels or {}):
                return float(sample.value)
    return None


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    """Polls `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def chat(text: str) -> Dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = Fake()
    yield f
    f.stop()


@pytest.fixture
def daemon(fake: Fake) -> Iterator[Daemon]:
    d = Daemon(fake)
    yield d
    d.stop()
