#!/usr/bin/env bash
# The whole test suite (sets up the environment first if needed).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
# The leaderboard test opens the HTML in Debian's headless Chromium; install it once.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian chromium for the HTML rendering test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "[setup] could not install chromium; its test will be skipped" >&2
fi
exec python -m pytest "$@"
