#!/usr/bin/env bash
# The main job on the embedded defaults: set up, build the corpus if missing, sweep every
# layer of the default upstreams on the embedded tasks, then rank layers and regenerate
# the leaderboard in results/. Safe to re-run: finished runs are reused, so the second
# time takes seconds.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
harness corpus build --profile default --quiet
harness corpus check
# Default upstreams: classic features and the random-weights control of a real SSL
# architecture. (ASR is left out here: its BiLSTM head takes hours on 2 CPU cores;
# run it with e.g. `harness run --upstream fbank --task asr --set head.hidden=128 --set head.proj=128`.)
UPSTREAMS=(fbank mfcc "distilhubert --random-init")
TASKS=(phone pr ic sid)
for up in "${UPSTREAMS[@]}"; do
    for task in "${TASKS[@]}"; do
        echo "== harness run --upstream $up --task $task --layer all" >&2
        # shellcheck disable=SC2086
        harness run --upstream $up --task "$task" --layer all --out results --quiet > /dev/null
    done
done
harness leaderboard --results results
harness report --results results
