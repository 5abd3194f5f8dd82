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


# ---- s3prl's bucketed batches, each rule written here from s3prl 0.4.18's source

def _s3prl_asr_reference(lengths, bucket_size):
    """downstream/asr/dataset.py, SequenceDataset.__init__: table sorted by length descending,
    then the loop that fills self.X (names kept)."""
    table = sorted(enumerate(lengths), key=lambda t: t[1], reverse=True)  # sort_values(ascending=False)
    X, batch_x, batch_len = [], [], []
    for x, x_len in table:
        batch_x.append(x)
        batch_len.append(x_len)
        if len(batch_x) == bucket_size:
            if (bucket_size >= 2) and (max(batch_len) > 2000):  # HALF_BATCHSIZE_TIME
                X.append(batch_x[:bucket_size // 2])
                X.append(batch_x[bucket_size // 2:])
            else:
                X.append(batch_x)
            batch_x, batch_len = [], []
    if len(batch_x) > 1:
        X.append(batch_x)
    return X


def _s3prl_ctc_reference(targets, wav_lengths, bucket_size):
    """downstream/ctc/corpus (libriphone/snips): sorted by target length, reverse; __getitem__ with
    bucketing; then data.py collect_audio_batch keeps the first half in training when the first
    wav is longer than half_batch_size_wav_len (300000)."""
    order = [i for i, _ in sorted(enumerate(targets), key=lambda t: len(t[1]), reverse=True)]
    out = []
    for index in range(len(order)):
        index = min(len(order) - bucket_size, index)
        batch = order[index:index + bucket_size]
        if wav_lengths[batch[0]] > 300000 and len(batch) > 1:
            batch = batch[:len(batch) // 2]
        out.append(batch)
    return out


@pytest.mark.parametrize("n,size", [(37, 8), (32, 8), (33, 8), (5, 1), (7, 2)])
def test_asr_buckets_are_s3prls(n, size):
    import numpy as np

    from harness.features.loaders import s3prl_asr_buckets

    rng = np.random.default_rng(n)
    lengths = rng.integers(1000, 300_000, size=n).tolist()
    lengths[1] = lengths[2]  # a tie
    lengths[0] = 1500  # short enough that a bucket of it alone would not be halved
    assert s3prl_asr_buckets(lengths, size) == _s3prl_asr_reference(lengths, size)
    short = [100 + i for i in range(n)]  # nothing over 2000 samples: buckets stay whole
    assert s3prl_asr_buckets(short, size) == _s3prl_asr_reference(short, size)
    covered = sorted(i for b in s3prl_asr_buckets(lengths, size) for i in b)
    assert len(covered) in (n, n - 1) and len(set(covered)) == len(covered)  # a last lone utterance is dropped


@pytest.mark.parametrize("n,size", [(20, 16), (40, 16), (16, 16), (9, 4)])
def test_ctc_buckets_are_s3prls(n, size):
    import numpy as np

    from harness.features.loaders import s3prl_ctc_buckets

    rng = np.random.default_rng(n + size)
    targets = [list(range(int(k))) for k in rng.integers(3, 40, size=n)]
    targets[1] = list(targets[2])  # a tie
    wavs = rng.integers(20_000, 600_000, size=n).tolist()
    ours = s3prl_ctc_buckets([len(t) for t in targets], wavs, size)
    assert ours == _s3prl_ctc_reference(targets, wavs, size) and len(ours) == n


def test_bucket_stream_resumes_visits_every_bucket_per_pass_and_splits_over_ranks(monkeypatch):
    import harness.features.loaders as loaders
    from harness.features.loaders import BucketSampler

    buckets = [[i, i + 100] for i in range(7)]
    whole = BucketSampler(buckets, 6, seed=3)
    whole.set_epoch(0)
    one_window = list(whole)
    parts = []
    for epoch in (0, 1):
        s = BucketSampler(buckets, 3, seed=3)
        s.set_epoch(epoch)
        parts += list(s)
    assert parts == one_window  # two windows of 3 steps = one of 6: a resumed run sees the same batches
    long = BucketSampler(buckets, 14, seed=3)
    stream = list(long)
    assert sorted(map(tuple, stream[:7])) == sorted(map(tuple, buckets))  # every bucket once per pass
    assert stream[:7] != stream[7:]  # each pass in its own order
    ranks = []
    for rank in (0, 1):
        monkeypatch.setattr(loaders, "world", lambda rank=rank: (rank, 2))
        s = BucketSampler(buckets, 7, seed=3, world_size=2)
        ranks.append(list(s))
    assert [b for pair in zip(*ranks) for b in pair] == stream  # step s: rank r takes position 2s + r
    with pytest.raises(HarnessError, match="no training batch"):
        BucketSampler([], 3, seed=0)
