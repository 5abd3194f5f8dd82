# Sourced by the README commands: create or reuse the project's virtual environment.
# Re-installs only when requirements.lock, setup.cfg or pyproject.toml change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HARNESS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
stamp_of() { cat "$ROOT/requirements.lock" "$ROOT/requirements-test.txt" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -c1-64; }
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV" >&2
    "$PY" -m venv "$VENV"
fi
WANT="$(stamp_of)"
if [ "$(cat "$VENV/.harness-stamp" 2>/dev/null || true)" != "$WANT" ]; then
    echo "[setup] installing pinned dependencies (first run: a few minutes, about 7.4 GB with torch)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.lock" -r "$ROOT/requirements-test.txt" >&2
    # the build backend's notice about editable installs (a banner of stars) says nothing to a user
    PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT" >&2
    echo "$WANT" > "$VENV/.harness-stamp"
fi
export PATH="$VENV/bin:$PATH"
