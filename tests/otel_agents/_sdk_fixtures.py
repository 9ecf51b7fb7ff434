# SPDX-License-Identifier: Apache-2.0
"""Shared helpers for the SDK tests: forked-child checks, zero-code application runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tests.otel_agents._sdkcore_helpers import VENV_BIN, subprocess_env


def fork_child(check: Callable[[], bool]) -> int:
    """Fork; the child runs ``check`` and exits 0 if it returned true, else 1; returns the pid.

    The child never returns into pytest: it leaves with ``os._exit`` whatever happens (an
    exception is printed and exits 1), so the parent's test run is not duplicated.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if check() else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_child(pid: int, timeout: float = 10.0) -> int:
    """The exit code of child ``pid``; it is killed and the test fails after ``timeout`` seconds.

    Polls (``WNOHANG``) instead of blocking, so a child deadlocked by the very bug under test
    fails the test instead of hanging it.
    """
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"forked child did not exit within {timeout:g} s (deadlocked?)")
        time.sleep(0.02)


def run_zero_code(
    app: Path, grpc_endpoint: str, service: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``app`` under ``opentelemetry-instrument``, traces over OTLP/gRPC to ``grpc_endpoint``.

    Only standard ``OTEL_*`` variables (none inherited), metrics and logs off, a 100 ms batch
    delay; ``env`` adds or overrides variables. Output is captured; the caller checks the result.
    """
    return subprocess.run(
        [str(VENV_BIN / "opentelemetry-instrument"), sys.executable, str(app)],
        env=subprocess_env(
            **{
                "OTEL_SERVICE_NAME": service,
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                **env,
            }
        ),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
