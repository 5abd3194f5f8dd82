#!/usr/bin/env bash
# The whole test suite (sets up the environment first if needed).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
exec python -m pytest "$@"
