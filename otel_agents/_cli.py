# SPDX-License-Identifier: Apache-2.0
"""``otel-agents`` command line: ``serve``, ``check-config``, ``demo``.

Each sub-command lives in its own module and is imported only when used, so ``otel-agents demo``
does not pay for the receiver's imports and vice versa.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

_COMMANDS = {
    "serve": ("otel_agents.receiver._serve", "Run the OTLP receiver (gRPC 4317, HTTP 4318)."),
    "check-config": ("otel_agents.receiver._serve", "Validate a receiver YAML config file."),
    "demo": ("otel_agents._demo", "Run the multi-agent demo (embedded receiver by default)."),
}


def _usage() -> str:
    lines = ["usage: otel-agents <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in _COMMANDS.items()]
    lines += ["", "Run 'otel-agents <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``otel-agents`` script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in _COMMANDS:
        print(f"otel-agents: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if command == "serve":
        # Before the receiver's imports and threads: the allocator settings must precede the
        # threads' first allocations (see _allocator.py; RC-12's long-soak creep).
        from otel_agents._allocator import tune_allocator

        tune_allocator()
    module = importlib.import_module(_COMMANDS[command][0])
    entry = getattr(module, "main_" + command.replace("-", "_"))
    return int(entry(rest))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
