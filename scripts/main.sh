#!/usr/bin/env bash
# The main job on the embedded defaults: set up, build the corpus if missing, and run
# the most complete analysis the harness has so far. Safe to re-run; fast the second time.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
harness corpus build --profile default
harness corpus check
