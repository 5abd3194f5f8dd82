"""Heads and featurizer: pooled caching is exact, subsampling heads map lengths."""

from __future__ import annotations

import torch

from harness.heads import BiLstmCtc, Featurizer, Probe, UtteranceHead, masked_mean


def test_pooled_means_give_the_frame_level_logits():
    torch.manual_seed(0)
    head = UtteranceHead(12, [5, 3], proj=7)
    x = torch.randn(4, 30, 12)
    lengths = torch.tensor([30, 17, 5, 22])
    frame_level = head(x, lengths)
    pooled = head(masked_mean(x, lengths))
    for a, b in zip(frame_level, pooled):
        assert torch.allclose(a, b, atol=1e-5)  # exact up to float32 rounding
    # also through a weighted featurizer over several layers (linear in the layers)
    layers = [torch.randn(4, 30, 12) for _ in range(3)]
    feat = Featurizer([0, 1, 2], weighted=True)
    with torch.no_grad():
        feat.weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
    a = head(feat(layers), lengths)
    b = head(feat([masked_mean(h, lengths) for h in layers]))
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(a, b))


def test_asr_head_downsampling_concatenates_frames_and_ignores_padding():
    torch.manual_seed(0)
    head = BiLstmCtc(6, 5, proj=4, hidden=3, layers=2, dropout=0.0, downsample=2).eval()
    x = torch.randn(2, 11, 6)
    out = head(x, torch.tensor([11, 7]))
    assert out.shape == (2, 5, 6)  # 11 // 2 frames, vocab + blank
    alone = head(x[1:, :7], torch.tensor([7]))  # 7 // 2 = 3 frames: padding beyond them changes nothing
    assert torch.allclose(out[1, :3], alone[0], atol=1e-6)
    assert head.output_lengths(torch.tensor([11, 7])).tolist() == [5, 3]


def test_a_probe_on_an_utterance_level_layer_pools_over_its_own_single_frame():
    """Frame lengths of other layers must not divide an embedding layer's one frame."""
    torch.manual_seed(0)
    head = UtteranceHead(4, [3], proj=5)
    probe = Probe(Featurizer([1], weighted=False), head)
    frames, emb = torch.randn(2, 9, 4), torch.randn(2, 1, 4)
    batch = {"lengths": torch.tensor([9, 6]), "layer_lengths": [torch.tensor([9, 6]), torch.tensor([1, 1])]}
    out, _ = probe.outputs([frames, emb], batch)
    assert torch.allclose(out[0], head(emb[:, 0])[0], atol=1e-6)


def test_superb_xvector_head_is_s3prls_architecture():
    from harness.heads import SuperbXVectorHead

    torch.manual_seed(0)
    head = SuperbXVectorHead(24, speakers=7, channels=16, pooled=30, embedding=12)
    convs = [m for m in head.tdnn if isinstance(m, torch.nn.Conv1d)]
    assert [(c.kernel_size[0], c.dilation[0], c.padding[0]) for c in convs] == [(5, 1, 0), (3, 2, 0), (3, 3, 0),
                                                                                 (1, 1, 0), (1, 1, 0)]
    assert convs[-1].out_channels == 30 and head.embed.in_features == 60 and head.connector.out_features == 16
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    assert head.output_lengths(torch.tensor([40, 20])).tolist() == [26, 6]  # valid convolutions: 14 frames fewer
    x = torch.randn(2, 40, 24)
    emb, cos = head(x, torch.tensor([40, 20]))
    assert emb.shape == (2, 12) and cos.shape == (2, 7) and (emb >= 0).all()  # Linear + ReLU is the embedding
    alone, _ = head(x[1:, :20], torch.tensor([20]))
    assert torch.allclose(emb[1], alone[0], atol=1e-5)  # padding never enters the statistics
    h = head.tdnn(head.connector(x[1:, :20]).transpose(1, 2))[0]  # unbiased standard deviation, as torch.std
    stats = torch.cat([h.mean(1), h.std(1)])
    assert torch.allclose(alone[0], torch.relu(head.embed(stats)), atol=1e-5)
    short, _ = head(torch.randn(1, 1, 24), torch.tensor([1]))  # an utterance-level layer still gives an embedding
    assert torch.isfinite(short).all()


def test_specaugment_masks_bands_and_spans_warps_only_valid_frames_and_is_off_in_eval():
    """Written from the recipe: up to 4 frequency bands of < 50 dims and 2 time spans of < 40
    frames are zero; padding stays zero; the warp keeps each utterance's length and values within
    its range; the same seed gives the same augmentation; eval returns the input."""
    from harness.heads import SpecAugment

    aug = SpecAugment()
    x = torch.rand(3, 120, 200) + 1.0  # strictly positive, so zeros are masks or padding
    lengths = torch.tensor([120, 80, 30])
    x[1, 80:] = 0
    x[2, 30:] = 0
    aug.eval()
    assert torch.equal(aug(x, lengths), x)
    aug.train()
    torch.manual_seed(0)
    y = aug(x, lengths)
    torch.manual_seed(0)
    assert torch.equal(aug(x, lengths), y)
    for i, n in enumerate(lengths.tolist()):
        assert (y[i, n:] == 0).all()
        valid = y[i, :n]
        zero_cols = (valid == 0).all(dim=0)  # frequency bands masked over every frame
        zero_rows = (valid == 0).all(dim=1)
        assert int(zero_cols.sum()) <= 4 * 49 and int(zero_rows.sum()) <= 2 * 39
        kept = valid[~zero_rows][:, ~zero_cols]
        lo, hi = x[i, :n].min(), x[i, :n].max()
        assert kept.numel() and (kept >= lo - 0.2).all() and (kept <= hi + 0.2).all()  # bicubic may overshoot a little
    torch.manual_seed(1)
    warped = SpecAugment(freq_masks=0, time_masks=0).train()(x, lengths)
    assert not torch.equal(warped[0], x[0]) and warped.shape == x.shape
    assert torch.equal(SpecAugment(warp_window=5, freq_masks=0, time_masks=0).train()(x[:, :10], torch.tensor([10, 10, 10])),
                       x[:, :10])  # shorter than two windows: no warp


def test_asr_superb_head_augments_and_drops_out_after_the_last_layer():
    head = BiLstmCtc(16, 28, proj=8, hidden=8, layers=2, dropout=0.5, specaug=True, final_dropout=True)
    x, lengths = torch.rand(2, 60, 16), torch.tensor([60, 40])
    head.eval()
    assert torch.equal(head(x, lengths), head(x, lengths))  # nothing random in eval
    head.train()
    torch.manual_seed(0)
    a = head(x, lengths)
    torch.manual_seed(1)
    assert not torch.equal(a, head(x, lengths)) and a.shape == (2, 60, 29)
    plain = BiLstmCtc(16, 28, proj=8, hidden=8, layers=2, dropout=0.5)
    assert plain.specaug is None and plain.final_dropout is None
