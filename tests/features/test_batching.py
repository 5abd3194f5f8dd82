"""Extraction batches by audio duration (sorted by length, decoded by DataLoader workers) and
still gives every utterance what it gives alone; progress is counted per utterance."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import torch

from harness.audio import SAMPLE_RATE, read_audio
from harness.features.cache import SHARD_SIZE, ensure_features
from harness.features.extract import (
    ExtractionProgress,
    iter_layers,
    plan_batches,
    significant,
)
from harness.registry import load_task
from harness.upstream import load_upstream


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"group": tiny_models.hf_hubert(root / "group", layers=2),  # group-norm CNN: padding-sensitive
            "stable": tiny_models.hf_hubert(root / "stable", stable=True, layers=2)}


def _examples(corpus, split="train", times=1):
    task = load_task("phone")(load_task("phone").default_config())
    return task.examples(corpus, split) * times


def _alone(up, wave: np.ndarray) -> list[np.ndarray]:
    out = up.layers(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    return [h[0, : int(n[0])].numpy() for h, n in zip(out.hidden, out.lengths)]


def test_batches_hold_at_most_the_seconds_asked_for_sorted_by_length():
    lengths = [3 * SAMPLE_RATE, SAMPLE_RATE, 2 * SAMPLE_RATE, SAMPLE_RATE, 200 * SAMPLE_RATE, 2 * SAMPLE_RATE]
    batches, long = plan_batches(lengths, padding_sensitive=False, chunkable=True, batch_seconds=4.0)
    assert long == [4]  # over LONG_SECONDS: windows
    assert batches == [[1, 3], [2, 5], [0]]  # ascending; 2 x 2 s = 4 s fits, 3 x 2 s would not
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 4 * SAMPLE_RATE
    exact, _ = plan_batches(lengths, padding_sensitive=True, chunkable=False, batch_seconds=100.0)
    assert exact == [[1, 3], [2, 5], [0], [4]]  # equal lengths only; nothing is long for a non-chunkable model


@pytest.mark.parametrize("kind", ["group", "stable"])
def test_length_batches_equal_one_by_one_extraction(tiny_corpus, models, kind):
    up = load_upstream(f"hf:{models[kind]}")
    assert up.padding_sensitive == (kind == "group")
    waves = [read_audio(e.path) for e in _examples(tiny_corpus, "dev")][:12]
    waves += [waves[0].copy(), waves[1][: len(waves[1]) // 2].copy()]  # one equal length, one odd length
    for seconds in (2.0, 64.0):  # batches of one or two, and everything that fits together
        got = dict(iter_layers(up, waves, batch_seconds=seconds))
        for i, w in enumerate(waves):
            for a, b in zip(got[i], _alone(up, w)):
                assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5  # float32 accumulation order only


def test_the_cache_through_dataloader_workers_equals_one_by_one(tiny_corpus, models, tmp_path):
    """Decoded by two worker processes into 3-second batches, the cached frames are each
    utterance's own layers in fp16, identical to extraction without workers."""
    up = load_upstream(f"hf:{models['group']}")
    ex = _examples(tiny_corpus, "dev")[:20]
    workers = ensure_features(up, "libri", "dev", ex, root=tmp_path / "w", progress=False, workers=2,
                              batch_seconds=3.0)
    inline = ensure_features(up, "libri", "dev", ex, root=tmp_path / "i", progress=False, workers=0)
    for e in ex:
        alone = _alone(up, read_audio(e.path))
        for layer in range(up.num_layers):
            a, b = workers.get(e.id)[layer].numpy(), inline.get(e.id)[layer].numpy()
            assert np.array_equal(a, b)  # same batches -> same bytes
            expect = alone[layer].astype(np.float16).astype(np.float32)
            np.testing.assert_allclose(a, expect, rtol=2e-3, atol=2e-3)


def test_progress_moves_per_utterance_and_counts_audio(tiny_corpus, tmp_path, monkeypatch):
    ex = _examples(tiny_corpus, "train", times=3)
    assert len(ex) > SHARD_SIZE  # more than one shard: the bar must not move per shard
    steps: list[tuple[int, int]] = []
    real = ExtractionProgress.advance

    def advance(self, samples=0, utterances=1):
        steps.append((utterances, samples))
        real(self, samples, utterances)

    monkeypatch.setattr(ExtractionProgress, "advance", advance)
    up = load_upstream("mfcc")
    ensure_features(up, "libri", "train", ex, root=tmp_path, progress=True)
    total = sum(len(read_audio(e.path)) for e in ex)
    assert len(steps) == len(ex) and all(u == 1 for u, _ in steps)  # one step per utterance
    assert sum(s for _, s in steps) == total  # and each carries its audio
    steps.clear()
    ensure_features(up, "libri", "train", ex, root=tmp_path, progress=True)
    assert steps == []  # nothing missing: no bar


def test_the_rate_is_seconds_of_audio_per_second_with_two_significant_figures(monkeypatch):
    import harness.features.extract as extract

    now = [100.0]
    monkeypatch.setattr(extract.time, "perf_counter", lambda: now[0])
    bar = ExtractionProgress(3, "test", enabled=False)
    now[0] = 104.0
    bar.advance(SAMPLE_RATE * 7)
    bar.advance(SAMPLE_RATE * 3)
    assert bar.utterances == 2 and bar.audio_seconds == 10.0 and bar.rate == 2.5  # 10 s of audio in 4 s
    bar.close()
    assert [significant(x) for x in (0.4321, 1.74, 58.3, 1234.0, 596.0)] == ["0.43", "1.7", "58", "1,200", "600"]
