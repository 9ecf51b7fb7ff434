# SPDX-License-Identifier: Apache-2.0
"""The otel-agents receiver: a spec-exact, durable, drop-in OTLP endpoint that analyses agent
traces and forwards everything to your backends.

Embedded use (tests, the demo)::

    from otel_agents.receiver import Receiver, load_config

    receiver = Receiver(load_config(None, overrides={...}))
    receiver.start()
    ...
    receiver.stop()
"""

from __future__ import annotations

# --- transport (gRPC/HTTP servers, validation, admission, admin) ---
# --- end transport ---

# --- spool, pipeline, config, Receiver ---
# --- end spool ---

__all__: list[str] = []  # each block above extends this list
