# SPDX-License-Identifier: Apache-2.0
"""Reliability scorecard RC-12 (CI-lite): a short run of the soak command, benchmarks/soak.py.

The nightly run is ``python -m benchmarks.soak --minutes 60 --write`` (RSS slope ≤ 1 MiB per
10 min after a 10-min warm-up).  In CI the same command runs for ``OTEL_AGENTS_RC12_MINUTES``
(1.5) with a 0.5-min warm-up; a one-minute regression window cannot resolve 1 MiB / 10 min (a
flat ``--no-analysis`` receiver reads ~15 MiB / 10 min from 1 MiB of noise), so the CI slope bound
is 50 MiB / 10 min — still 20× below the growth measured with analysis on.  Every other
criterion is the nightly one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.otel_agents.receiver._rc_fixtures import ROOT, record_figures

MINUTES = float(os.environ.get("OTEL_AGENTS_RC12_MINUTES", "1.5"))
CI_MAX_SLOPE = 50.0  # MiB per 10 min, see the module docstring


@pytest.mark.xfail(
    strict=True,
    reason=(
        "receiver RSS still rises through the CI window under trace/name churn: after the "
        "bottleneck per-window key cap and growing baseline rings, 1.5-min runs read ~400 MiB "
        "per 10 min (was 1,100-1,500; analysis stage alone ~166); the rest is bounded fill "
        "(label tables, names) and allocator growth under the soak's 3-s /metrics scrapes of "
        "~2,001 series x 17 families (91 without scrapes, 441 with); see docs/reliability.md"
    ),
)
def test_rc12_soak_with_churn_ci_lite() -> None:
    """RC-12: 2,500 spans/s with fresh traces and 10,000 agent/model names: no acknowledged span
    lost, FDs/threads flat, spool and open traces within their caps, RSS slope within bound."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.soak",
            "--minutes",
            str(MINUTES),
            "--warmup",
            str(MINUTES / 3),
            "--max-slope",
            str(CI_MAX_SLOPE),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=MINUTES * 60 + 180,
        check=False,
    )
    lines = proc.stdout.decode().strip().splitlines()
    assert lines, proc.stderr.decode(errors="replace")[-3000:]
    res = json.loads(lines[-1])
    record_figures(
        "RC-12",
        "test_rc12_soak_with_churn_ci_lite",
        **{k: v for k, v in res.items() if k != "tracemalloc_top"},
    )
    assert res["acked_spans"] > 0 and res["lost_spans"] == 0, res
    assert res["failures"] == [], res["failures"]
    assert proc.returncode == 0
