"""examples/python-app runs against a real daemon, as an app would (BREAKWATER_SOCKET)."""
from __future__ import annotations

import os
import subprocess
import sys

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
