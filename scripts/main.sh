#!/usr/bin/env bash
# The main job on the embedded defaults: set up, build the corpus if missing, then run a
# benchmark config in one process and print the best layers and the leaderboard path.
#   bash scripts/main.sh          benchmarks/quick.yaml: the tiny HuBERT trained here vs classic
#                                 features on phone/ic/sid (5 min 36 s measured on 2 cores the first
#                                 time, building the corpus included; environment already installed)
#   bash scripts/main.sh --full   benchmarks/full.yaml: every committed result (about 90 minutes)
# Finished runs are found by their identity and reused, so a second run takes seconds.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
CONFIG=benchmarks/quick.yaml
case "${1:-}" in
    --full) CONFIG=benchmarks/full.yaml ;;
    "") ;;
    *) echo "usage: bash scripts/main.sh [--full]" >&2; exit 2 ;;
esac
harness corpus build --profile default --quiet > /dev/null
harness corpus check
harness benchmark "$CONFIG" --quiet
