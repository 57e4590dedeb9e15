"""examples/python-app and examples/swift-app run against a real daemon, as apps would (BREAKWATER_SOCKET)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, Daemon


def test_the_python_example_app_runs(daemon: Daemon) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "python-app" / "app.py")],
                            env={**os.environ, "BREAKWATER_SOCKET": daemon.socket}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "whole answer from fake/gpt-4o-mini after 1 attempt(s)" in result.stdout
    assert "streamed answer: " in result.stdout
    assert "through the OpenAI SDK: " in result.stdout
    assert "an unknown route raises UnknownRoute (UNKNOWN_ROUTE)" in result.stdout


@pytest.mark.skipif("BREAKWATER_SWIFT_APP" not in os.environ,
                    reason="scripts/test.sh builds examples/swift-app and names it in BREAKWATER_SWIFT_APP")
def test_the_swift_example_app_runs(daemon: Daemon) -> None:
    result = subprocess.run([os.environ["BREAKWATER_SWIFT_APP"]],
                            env={**os.environ, "BREAKWATER_SOCKET": daemon.socket}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "whole answer from fake/gpt-4o-mini after 1 attempt(s)" in result.stdout
    assert "streamed answer: " in result.stdout
    assert "an unknown route fails with UNKNOWN_ROUTE" in result.stdout
