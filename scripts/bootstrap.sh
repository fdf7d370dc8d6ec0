#!/usr/bin/env bash
# Set up .venv with torch and odekit (editable, with test extras). Safe to run repeatedly:
# it reinstalls odekit only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "odekit bootstrap: creating .venv with $($PYTHON --version)" >&2
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # Pin torch first: an unpinned install could pull a multi-GB CUDA build.
    echo "odekit bootstrap: installing torch==2.13.0" >&2
    .venv/bin/pip install --quiet torch==2.13.0
fi
stamp=.venv/.odekit-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "odekit bootstrap: installing odekit and its dependencies" >&2
    .venv/bin/pip install --quiet -e ".[test]"
    echo "$want" > "$stamp"
fi
