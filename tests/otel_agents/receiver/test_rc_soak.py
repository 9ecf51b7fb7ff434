# SPDX-License-Identifier: Apache-2.0
"""Reliability scorecard RC-12 (CI-lite): a short run of the soak command, benchmarks/soak.py.

The nightly run is ``python -m benchmarks.soak --minutes 60 --write`` (RSS slope ≤ 1 MiB per
10 min after a 10-min warm-up).  In CI the same command runs for ``OTEL_AGENTS_RC12_MINUTES``
(1.5) with a 0.5-min warm-up.  That window lies inside the analysis' fill horizon (per-key state
of the anomaly baselines, whose rings grow to 120 intervals = 10 min, the 5-min bottleneck
window, genai-prices' lookup caches): tracemalloc sees ~6 MiB of processor state added per
90 s there, and the long soak shows it level off (135-140 MiB from minute 10 on).  So the CI
run cannot check the nightly 1 MiB / 10 min; it guards against the leak class RC-12 found —
before the analysis metrics were streamed from their own state and the heap trimmed, the
1.5-min run read 320-1,574 MiB / 10 min with RSS 256-476 MiB — with a slope bound of 100 MiB /
10 min (measured after the fixes: 9-63 in 11 runs on the shared box) and RSS at most 192 MiB
(75 % of the default 256 MiB admission budget, whose 80 % mark starts refusals; measured
122-133).  Every other criterion is the nightly one, plus >= 90 % of the offered spans
acknowledged (a receiver refusing at its memory budget is not soaking).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.otel_agents.receiver._rc_fixtures import ROOT, record_figures

MINUTES = float(os.environ.get("OTEL_AGENTS_RC12_MINUTES", "1.5"))
CI_MAX_SLOPE = 100.0  # MiB per 10 min, see the module docstring
CI_MAX_RSS_MIB = 192.0  # see the module docstring


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
        **{k: v for k, v in res.items() if k not in ("tracemalloc_top", "rss_series")},
    )
    assert res["acked_spans"] > 0 and res["lost_spans"] == 0, res
    assert res["failures"] == [], res["failures"]
    assert res["rss_max_mib"] <= CI_MAX_RSS_MIB, res["rss_max_mib"]
    assert proc.returncode == 0
