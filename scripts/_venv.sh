# Sourced by the scripts: creates .venv (once) and installs the project into it.
# OTEL_AGENTS_VENV overrides the location.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OTEL_AGENTS_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[${OTEL_AGENTS_EXTRAS:-test}]"
