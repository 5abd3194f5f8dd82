"""Upstreams: one interface, real checkpoint formats, cross-checked numbers, batching, offline."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import tiny_models
import torch

from harness.errors import HarnessError
from harness.features.extract import iter_layers, length_buckets
from harness.fsutil import sha256_file
from harness.registry import cards
from harness.upstream import load_upstream, pad_batch

CROSS_TOL = 1e-4


def _waves(n=3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(24000) / 16000
    out = []
    for i, length in enumerate([16000, 13100, 21750][:n]):
        tone = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t[:length]) + 0.05 * rng.standard_normal(length)
        out.append(tone.astype(np.float32))
    return out


def _alone(up, wav):
    wavs, lens = pad_batch([torch.from_numpy(wav)])
    return up.layers(wavs, lens).utterance(0)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"group": tiny_models.hf_hubert(root / "group"), "stable": tiny_models.hf_hubert(root / "stable", stable=True)}


@pytest.mark.parametrize("kind", ["group", "stable"])
def test_hf_matches_transformers_hidden_states(hf_dirs, kind):
    from transformers import HubertModel

    up = load_upstream(f"hf:{hf_dirs[kind]}")
    assert up.num_layers == 4 and up.info.layer_names[0] == "cnn" and up.info.hop == 320
    assert up.info.weights_sha256 == sha256_file(hf_dirs[kind] / "model.safetensors")
    ref = HubertModel.from_pretrained(hf_dirs[kind]).eval()
    wav = _waves(1)[0]
    x = torch.from_numpy(wav)[None]
    if kind == "stable":  # the feature extractor's zero-mean unit-variance normalisation
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
    with torch.no_grad():
        out = ref(x, output_hidden_states=True)
    # documented mapping: layers 0..L-1 = hidden_states[0..L-1]; layer L = the encoder output
    expected = list(out.hidden_states[:-1]) + [out.last_hidden_state]
    if kind == "group":
        assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    else:
        assert torch.allclose(ref.encoder.layer_norm(out.hidden_states[-1]), out.last_hidden_state, atol=1e-6)
    ours = _alone(up, wav)
    assert len(ours) == len(expected) == 4
    for a, b in zip(ours, expected):
        assert a.shape == b[0].shape
        assert torch.allclose(a, b[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["group", "stable"])
def test_hf_and_torchaudio_agree_layer_for_layer(hf_dirs, kind, tmp_path):
    sd = tiny_models.torchaudio_from_hf(hf_dirs[kind], tmp_path / "ta.pt")
    hf = load_upstream(f"hf:{hf_dirs[kind]}")
    ta = load_upstream(f"torchaudio:{sd}")
    assert ta.info.weights_sha256 == sha256_file(sd)
    for wav in _waves():
        a, b = _alone(hf, wav), _alone(ta, wav)
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.shape == y.shape, i
            assert (x - y).abs().max().item() <= CROSS_TOL, (kind, i, (x - y).abs().max().item())


def test_s3prl_checkpoint_agrees_with_torchaudio(tmp_path):
    ckpt = tmp_path / "hubert_tiny.pt"
    model = tiny_models.s3prl_hubert(ckpt)
    sd = tiny_models.torchaudio_from_s3prl(model, tmp_path / "ta.pt")
    s3 = load_upstream(f"s3prl:hubert_local={ckpt}")
    ta = load_upstream(f"torchaudio:{sd}")
    assert s3.num_layers == 3 == ta.num_layers and s3.info.weights_sha256 == sha256_file(ckpt)
    for wav in _waves():
        a, b = _alone(s3, wav), _alone(ta, wav)
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.shape == y.shape, (i, x.shape, y.shape)
            assert (x - y).abs().max().item() <= CROSS_TOL, (i, (x - y).abs().max().item())


@pytest.mark.parametrize("kind,names", [("ecapa", ["block_0", "block_1", "block_2", "block_3", "mfa", "embedding"]),
                                        ("xvector", ["tdnn_1", "tdnn_2", "tdnn_3", "pooling", "embedding"])])
def test_speechbrain_directory_layers_and_embedding(tmp_path, kind, names):
    from speechbrain.inference.speaker import EncoderClassifier

    folder = tiny_models.speechbrain_dir(tmp_path / kind, kind)
    up = load_upstream(f"speechbrain:{folder}")
    assert up.info.layer_names == names
    assert up.info.weights_sha256 == sha256_file(folder / "embedding_model.ckpt")
    wav = _waves(1)[0]
    layers = _alone(up, wav)
    assert layers[0].shape[0] == len(wav) // 160 + 1 and layers[-1].shape[0] == 1
    clf = EncoderClassifier.from_hparams(source=str(folder), savedir=str(tmp_path / "sb"), run_opts={"device": "cpu"})
    ref = clf.encode_batch(torch.from_numpy(wav)[None])[0]
    # two instances of the same float32 model differ by ~3e-5 here (kernel accumulation order)
    assert (layers[-1] - ref).abs().max().item() <= 1e-4


def test_classic_features_match_kaldi():
    from torchaudio.compliance import kaldi

    up = load_upstream("fbank")
    wav = _waves(1)[0]
    (fb,) = _alone(up, wav)
    ref = kaldi.fbank(torch.from_numpy(wav)[None] * 32768, num_mel_bins=80, dither=0.0)
    assert fb.shape == (1 + (len(wav) - 400) // 160, 80) and torch.allclose(fb, ref)
    (mf,) = _alone(load_upstream("mfcc"), wav)
    assert mf.shape == (fb.shape[0], 39)



def test_superb_baselines_follow_s3prls_extracter():
    """s3prl 0.4.18 upstream/baseline: kaldi features of the float waveform, Delta(order=2,
    win_length=5), CMVN (x - mean) / (1e-10 + std) per utterance."""
    from torchaudio.compliance import kaldi
    from torchaudio.transforms import ComputeDeltas

    wav = torch.from_numpy(_waves(1)[0])
    deltas = ComputeDeltas(win_length=5)

    def s3prl_like(x):
        feats = [x]
        for _ in range(2):
            feats.append(deltas(feats[-1].T[None])[0].T)
        x = torch.cat(feats, dim=-1)
        return (x - x.mean(0, keepdim=True)) / (1e-10 + x.std(0, keepdim=True))

    (fb,) = _alone(load_upstream("fbank_superb"), wav.numpy())
    ref = s3prl_like(kaldi.fbank(wav[None], num_mel_bins=80, frame_length=25.0, frame_shift=10.0))
    assert fb.shape == (ref.shape[0], 240) and torch.allclose(fb, ref, atol=1e-4)
    assert fb.mean(0).abs().max() < 1e-4  # per-utterance CMVN
    (mf,) = _alone(load_upstream("mfcc_superb"), wav.numpy())
    ref = s3prl_like(kaldi.mfcc(wav[None], num_ceps=13, frame_length=25.0, frame_shift=10.0))
    assert mf.shape == (ref.shape[0], 39) and torch.allclose(mf, ref, atol=1e-4)


def _batch_vs_alone(up, waves):
    wavs, lens = pad_batch([torch.from_numpy(w) for w in waves])
    out = up.layers(wavs, lens)
    worst = 0.0
    for i, w in enumerate(waves):
        for a, b in zip(out.utterance(i), _alone(up, w)):
            assert a.shape == b.shape
            worst = max(worst, (a - b).abs().max().item())
    return worst


def test_layer_norm_models_batch_exactly(hf_dirs, tmp_path):
    """Padding with a mask changes nothing for layer-norm CNNs (HF and torchaudio)."""
    hf = load_upstream(f"hf:{hf_dirs['stable']}")
    assert not hf.padding_sensitive
    assert _batch_vs_alone(hf, _waves()) <= 1e-5
    ta = load_upstream(f"torchaudio:{tiny_models.torchaudio_from_hf(hf_dirs['stable'], tmp_path / 'ta.pt')}")
    assert not ta.padding_sensitive
    assert _batch_vs_alone(ta, _waves()) <= 1e-5
    assert _batch_vs_alone(load_upstream("fbank"), _waves()) == 0.0


@pytest.fixture(scope="module")
def padding_sensitive_specs(hf_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("ps")
    ckpt = root / "s3prl.pt"
    tiny_models.s3prl_hubert(ckpt)
    return {
        "hf": f"hf:{hf_dirs['group']}",
        "torchaudio": f"torchaudio:{tiny_models.torchaudio_from_hf(hf_dirs['group'], root / 'ta.pt')}",
        "s3prl": f"s3prl:hubert_local={ckpt}",
        "speechbrain": f"speechbrain:{tiny_models.speechbrain_dir(root / 'sb', 'ecapa')}",
    }


@pytest.mark.parametrize("backend", ["hf", "torchaudio", "s3prl", "speechbrain"])
def test_padding_sensitive_models_are_batched_exactly(padding_sensitive_specs, backend):
    """Group-norm CNNs normalise over time (and SpeechBrain's 'same' convolutions see the
    padding), so padding shifts every frame; the batcher therefore only groups equal
    lengths for them, which is exact up to float32 accumulation order."""
    up = load_upstream(padding_sensitive_specs[backend])
    assert up.padding_sensitive
    naive = _batch_vs_alone(up, _waves())
    print(f"{backend}: padded-batch max abs difference {naive:.3g}")
    assert naive > 1e-4  # the documented reason for the policy
    waves = _waves() + [_waves()[0].copy()]
    got = dict(iter_layers(up, waves))
    for i, w in enumerate(waves):
        for a, b in zip(got[i], _alone(up, w)):
            assert np.abs(a - b.numpy()).max() <= 1e-5  # batch-size-dependent float32 accumulation
    assert length_buckets([5, 5, 7, 5], 100, exact=True) == [[0, 1, 3], [2]]
    assert length_buckets([5, 6, 7, 5], 14, exact=False) == [[0, 3], [1, 2]]


def test_every_card_has_its_known_layer_count():
    known = {"hubert_base": 13, "hubert_large_ll60k": 25, "wav2vec2_base_960": 13, "wav2vec2_large_ll60k": 25,
             "wavlm_base": 13, "wavlm_base_plus": 13, "wavlm_large": 25, "data2vec_base_960": 13, "distilhubert": 3,
             "ecapa_tdnn": 6, "xvector": 7, "fbank": 1, "mfcc": 1, "fbank_superb": 1, "mfcc_superb": 1, "ge2e": 4}
    shipped = [f"tiny_hubert_it1{s}" for s in ("_step600", "_step1200", "_step1800", "_step2400", "")]
    shipped += ["tiny_hubert_it2_step1200", "tiny_hubert_it2_step2400", "tiny_hubert_it2"]
    shipped += [f"tiny_wav2vec2{s}" for s in ("_step600", "_step1200", "_step1800", "_step2400", "")]
    known.update({name: 7 for name in shipped})
    known.update({f"tiny_dino{s}": 6 for s in ("_step500", "_step1000", "")})
    assert set(known) == set(cards())
    wav = torch.from_numpy(_waves(1)[0])[None]
    for name, card in cards().items():
        assert card.layers == known[name], name
        ships_weights = ":@" in card.spec  # trained here and packaged: load the real weights
        up = load_upstream(name, random_init=card.architecture is not None and not ships_weights)
        assert (up.info.weights_sha256 is not None) == ships_weights, name
        out = up.layers(wav, torch.tensor([wav.shape[1]]))
        assert len(out) == known[name], name
        dims = [h.shape[-1] for h in out.hidden]
        assert dims == (card.dim if isinstance(card.dim, list) else [card.dim] * card.layers), name


def test_random_init_is_deterministic_and_differs_from_weights(hf_dirs):
    a = load_upstream(f"hf:{hf_dirs['group']}", random_init=True, seed=1)
    b = load_upstream(f"hf:{hf_dirs['group']}", random_init=True, seed=1)
    c = load_upstream(f"hf:{hf_dirs['group']}")
    wav = _waves(1)[0]
    la, lb, lc = _alone(a, wav), _alone(b, wav), _alone(c, wav)
    assert all(torch.equal(x, y) for x, y in zip(la, lb))
    assert not torch.allclose(la[-1], lc[-1])
    assert a.info.random_init and a.info.weights_sha256 is None


def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_extract_cli_writes_every_layer(hf_dirs, tmp_path):
    from transformers import HubertModel

    wav = _waves(1)[0]
    sf.write(str(tmp_path / "a.wav"), wav, 16000, subtype="FLOAT")
    out = tmp_path / "a.npz"
    proc = _cli("extract", "--upstream", f"hf:{hf_dirs['group']}", "--wav", str(tmp_path / "a.wav"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    arrays = np.load(out)
    ref = HubertModel.from_pretrained(hf_dirs["group"]).eval()
    with torch.no_grad():
        states = ref(torch.from_numpy(wav)[None], output_hidden_states=True).hidden_states
    assert sorted(arrays.files) == sorted(f"layer_{i}" for i in range(len(states)))
    for i, s in enumerate(states):
        assert arrays[f"layer_{i}"].dtype == np.float32
        assert np.abs(arrays[f"layer_{i}"] - s[0].numpy()).max() <= 1e-6


@pytest.mark.parametrize("spec", ["hubert_base", "torchaudio:HUBERT_BASE", "speechbrain:speechbrain/spkrec-ecapa-voxceleb"])
def test_offline_without_cache_fails_fast_with_one_line(tmp_path, spec):
    wav = tmp_path / "a.wav"
    sf.write(str(wav), _waves(1)[0], 16000)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               HARNESS_HOME=str(tmp_path / "home"), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               NO_PROXY="")
    env.pop("HF_HUB_OFFLINE", None)
    start = time.time()
    proc = _cli("extract", "--upstream", spec, "--wav", str(wav), "--out", str(tmp_path / "o.npz"), env=env)
    took = time.time() - start
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "fetch" in lines[0] and "no network" in lines[0]
    assert took < 30, took
    if not spec.startswith("torchaudio"):  # the hub's cache where HF_HOME puts it, not ~/.cache/huggingface
        assert str(tmp_path / "hf" / "hub" / "models--") in lines[0], lines[0]


def test_bad_specs_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="unknown upstream"):
        load_upstream("not_a_model")
    with pytest.raises(HarnessError, match="unknown upstream backend"):
        load_upstream("nope:thing")
    with pytest.raises(HarnessError, match="does not exist"):
        load_upstream(f"hf:{tmp_path}/missing")
    with pytest.raises(HarnessError, match="random-init"):
        load_upstream("torchaudio:hubert_base")


# ----------------------------------------------------------- waveform normalisation per backend
def test_torchaudio_normalises_as_its_own_bundles():
    """Reference: torchaudio's bundles' ``_normalize_waveform``. The rule for other models (layer
    norm first in the encoder -> normalise) holds for every bundle, and every named factory takes
    its bundle's flag (the old rule read torchaudio's inverted transformer flag: every Base model
    normalised and no Large one)."""
    import torchaudio
    import torchaudio.models as models
    from harness.upstreams.torchaudio_backend import _FACTORIES, normalises_waveform

    bundles = [getattr(torchaudio.pipelines, n) for n in dir(torchaudio.pipelines)]
    bundles = [b for b in bundles if hasattr(b, "_normalize_waveform") and hasattr(b, "_params")]
    assert len(bundles) >= 20
    for b in bundles:
        assert bool(b._normalize_waveform) == bool(b._params["encoder_layer_norm_first"])
    named = [f for f in _FACTORIES if hasattr(torchaudio.pipelines, f.upper())]
    assert {"hubert_base", "hubert_large", "wav2vec2_base", "wavlm_large"} <= set(named)
    for f in named:
        assert normalises_waveform(None, f) == bool(getattr(torchaudio.pipelines, f.upper())._normalize_waveform), f
    small = dict(extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2)],
                 extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.0,
                 encoder_pos_conv_kernel=4, encoder_pos_conv_groups=2, encoder_num_layers=1, encoder_num_heads=2,
                 encoder_attention_dropout=0.0, encoder_ff_interm_features=32, encoder_ff_interm_dropout=0.0,
                 encoder_dropout=0.0, encoder_layer_drop=0.0, aux_num_out=None)
    for first in (False, True):  # the structural rule on models built here, no bundle involved
        model = models.wav2vec2_model(**small, encoder_layer_norm_first=first)
        assert normalises_waveform(model) is first
    base = load_upstream("torchaudio:hubert_base", random_init=True)
    assert base.normalize is False and base.identity()["revision"] == 1  # HUBERT_BASE does not normalise


def test_hf_normalises_as_its_feature_extractor(hf_dirs):
    """Reference: the model directory's own ``Wav2Vec2FeatureExtractor`` (preprocessor_config.json):
    the upstream's layers on a raw waveform equal the model on the extractor's input values."""
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    wave = (np.random.default_rng(0).normal(0, 0.1, 6000) + 0.3).astype(np.float32)  # a DC offset: normalising matters
    for kind in ("group", "stable"):
        folder = hf_dirs[kind]
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
        up = load_upstream(f"hf:{folder}")
        assert up.normalize == bool(extractor.do_normalize)
        values = torch.from_numpy(extractor(wave, sampling_rate=16000, return_tensors="np")["input_values"][0])[None]
        model = AutoModel.from_pretrained(folder).eval()
        with torch.no_grad():
            ref = model(values.float(), output_hidden_states=True).hidden_states
        got = up.layers(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        assert torch.allclose(got.hidden[0], ref[0], atol=1e-5), kind


# ------------------------------------------------------------------------------ short clips
def test_no_frame_of_a_short_clip_comes_from_padding(hf_dirs):
    """HF's length formula is -1 below the receptive field; a slice [:-1] kept the padded frames."""
    up = load_upstream(f"hf:{hf_dirs['stable']}")
    assert up.info.shortest_input() == 400
    x = torch.zeros(2, 16000)
    x[0] = torch.randn(16000)
    x[1, :50] = torch.randn(50)
    out = up.layers(x, torch.tensor([16000, 50]))
    assert [int(n[1]) for n in out.lengths] == [0] * len(out.lengths)
    assert all(u.shape[0] == 0 for u in out.utterance(1))


def test_every_backend_declares_its_shortest_input(hf_dirs, tmp_path):
    """The declared minimum gives at least one frame, one sample less gives none or fails."""
    specs = {"fbank": "fbank", "hf": f"hf:{hf_dirs['group']}",
             "speechbrain": f"speechbrain:{tiny_models.speechbrain_dir(tmp_path / 'sb')}"}
    expected = {"fbank": 400, "hf": 400, "speechbrain": 640}
    for name, spec in specs.items():
        up = load_upstream(spec)
        n = up.info.shortest_input()
        assert n == expected[name], name
        out = up.layers(torch.randn(1, n), torch.tensor([n]))
        assert min(int(lengths[0]) for lengths in out.lengths) >= 1, name
        try:
            fewer = up.layers(torch.randn(1, n - 1), torch.tensor([n - 1]))
        except RuntimeError:
            continue
        assert min(int(lengths[0]) for lengths in fewer.lengths) == 0, name
