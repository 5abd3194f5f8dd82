"""Batches: a seeded stream that resumes, global batches under DDP, collation."""

from __future__ import annotations

import pytest
import torch

from harness.errors import HarnessError
from harness.features.loaders import StreamSampler, collate


def test_stream_sampler_epochs_depend_only_on_seed_and_epoch():
    s = StreamSampler(10, 4, 3, seed=5)
    s.set_epoch(2)
    a = list(s)
    t = StreamSampler(10, 4, 3, seed=5)
    t.set_epoch(2)
    assert a == list(t) and len(a) == 12
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    stream = first + list(s)
    assert sorted(stream[:10]) == list(range(10))  # each pass over the stream is a permutation


def test_under_ddp_the_ranks_split_each_global_batch(monkeypatch):
    import harness.features.loaders as loaders

    single = StreamSampler(13, 4, 5, seed=1)
    single.set_epoch(3)
    whole = list(single)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(loaders, "world", lambda rank=rank: (rank, 2))
        s = StreamSampler(13, 4, 5, seed=1, world_size=2)
        s.set_epoch(3)
        shares.append(list(s))
        assert s.per_rank_batch == 2 and len(shares[-1]) == 10
    for step in range(5):  # step s: rank 0's 2 items + rank 1's 2 items == the single process's batch
        assert shares[0][2 * step:2 * step + 2] + shares[1][2 * step:2 * step + 2] == whole[4 * step:4 * step + 4]
    with pytest.raises(HarnessError, match="divisible"):
        StreamSampler(13, 5, 5, seed=1, world_size=2)
    monkeypatch.setattr(loaders, "world", lambda: (0, 3))
    with pytest.raises(HarnessError, match="set up for 2"):
        list(StreamSampler(13, 4, 5, seed=1, world_size=2))


def test_collate_pads_frames_and_keeps_per_layer_lengths():
    items = [{"example": i, "hidden": [torch.ones(n, 3), torch.ones(1, 2), None]} for i, n in enumerate((4, 2))]
    b = collate(items)
    assert b["hidden"][0].shape == (2, 4, 3) and b["hidden"][2] is None
    assert b["layer_lengths"][0].tolist() == [4, 2] and b["layer_lengths"][1].tolist() == [1, 1]
    assert b["lengths"].tolist() == [4, 2]
    pooled = collate([{"example": 0, "hidden": [torch.ones(3)]}, {"example": 1, "hidden": [torch.zeros(3)]}])
    assert pooled["hidden"][0].shape == (2, 3) and pooled["lengths"] is None


def test_weighted_draws_follow_the_weights_and_resume_exactly():
    weights = [1.0] * 9 + [9.0]  # item 9 is one class of one: drawn about half the time
    s = StreamSampler(10, 5, 40, seed=3, weights=weights)
    s.set_epoch(1)
    draws = list(s)
    assert 0.4 < draws.count(9) / len(draws) < 0.6 and len(set(draws)) > 5
    again = StreamSampler(10, 5, 40, seed=3, weights=weights)
    again.set_epoch(1)
    assert list(again) == draws  # a function of (seed, epoch): a resumed run draws the same
    with pytest.raises(HarnessError, match="sample weights"):
        StreamSampler(10, 5, 4, seed=3, weights=[1.0] * 9)


def test_crops_are_fresh_per_draw_and_fixed_by_seed_and_position():
    from harness.features.loaders import FeatureDataset, crop_window
    from harness.task import Example

    assert crop_window(100, 30, 0, 7) == crop_window(100, 30, 0, 7)
    starts = {crop_window(100, 30, 0, p)[0] for p in range(50)}
    assert len(starts) > 10 and min(starts) >= 0 and max(starts) <= 70
    assert crop_window(20, 30, 0, 1) == (0, 20)  # shorter than the crop: whole
    s = StreamSampler(3, 3, 2, seed=4, draws=True)
    keys = list(s)
    assert [k[0] for k in keys] == list(StreamSampler(3, 3, 2, seed=4)) and [k[2] for k in keys] == list(range(6))

    class Cache:
        def get(self, key):
            return [torch.arange(100.0)[:, None], torch.ones(1, 2), None]

    ds = FeatureDataset([Example("a", "a.wav", ("x",), crop=3200)], Cache(), hop=320)  # 10 frames
    hidden = ds[(0, 4, 9)]["hidden"]
    start = crop_window(100, 10, 4, 9)[0]
    assert hidden[0][:, 0].tolist() == list(range(start, start + 10)) and hidden[1].shape == (1, 2)
    assert len(ds[0]["hidden"][0]) == 100  # evaluation reads the whole utterance
