"""--layer parsing and which probes a task can train on an upstream."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.probing.probes import needed_layers, parse_layers, select_probes
from harness.upstream import UpstreamInfo


def test_layer_argument_parsing():
    assert [p.key for p in parse_layers("all", 3)] == ["layer_0", "layer_1", "layer_2", "weighted"]
    assert parse_layers("2", 3)[0].layers == (2,)
    assert parse_layers("1-2", 4)[0].layers == (1, 2) and parse_layers("1-2", 4)[0].weighted
    assert parse_layers("3,1", 4)[0].layers == (1, 3)
    for bad, msg in [("5", "out of range"), ("2-1", "must go up"), ("x", "not N"), ("1,9", "out of range")]:
        with pytest.raises(HarnessError, match=msg):
            parse_layers(bad, 4)


def _speaker_model() -> UpstreamInfo:
    return UpstreamInfo(spec="sb", backend="speechbrain", source="x", layer_names=["b0", "b1", "mfa", "embedding"],
                        dims=[8, 8, 24, 4], hop=160, weights_sha256=None, layer_hops=[160, 160, 160, None])


def test_frame_tasks_keep_frame_level_layers_and_weigh_over_equal_dims():
    info = _speaker_model()
    frame = select_probes("all", info, "frame")
    assert [p.key for p in frame] == ["layer_0", "layer_1", "layer_2"]  # no embedding; mixed dims: no weighted sum
    utt = select_probes("all", info, "utterance")
    assert [p.key for p in utt] == ["layer_0", "layer_1", "layer_2", "layer_3"]
    with pytest.raises(HarnessError, match="utterance-level"):
        select_probes("3", info, "ctc")
    with pytest.raises(HarnessError, match="different dims"):
        select_probes("1-2", info, "utterance")
    assert [p.layers for p in select_probes("0-1", info, "frame")] == [(0, 1)]
    assert needed_layers(select_probes("all", info, "frame")) == [0, 1, 2]
