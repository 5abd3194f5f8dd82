"""Tiny randomly initialised models written in each backend's own checkpoint format."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def hf_hubert(folder: Path, stable: bool = False, seed: int = 0, layers: int = 3) -> Path:
    """A tiny HuBERT saved with ``save_pretrained`` (safetensors), as on the hub."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    cfg = HubertConfig(
        hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable, conv_bias=stable,
    )
    model = HubertModel(cfg)
    # make the random model less trivial than its init (non-zero biases, scaled norms)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": stable, "feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0,
        "return_attention_mask": stable, "feature_extractor_type": "Wav2Vec2FeatureExtractor"}))
    return folder


def torchaudio_from_hf(hf_folder: Path, out: Path) -> Path:
    """Convert a HF model with torchaudio's importer; write state dict + factory sidecar."""
    from torchaudio.models.wav2vec2.utils import import_huggingface_model
    from torchaudio.models.wav2vec2.utils.import_huggingface import _get_config
    from transformers import HubertModel

    hf = HubertModel.from_pretrained(hf_folder)
    ta = import_huggingface_model(hf)
    torch.save(ta.state_dict(), out)
    kwargs = _get_config(hf.config)
    kwargs["aux_num_out"] = None
    out.with_suffix(".json").write_text(json.dumps({"factory": "wav2vec2_model", "kwargs": kwargs,
                                                    "normalize_waveform": bool(hf.config.do_stable_layer_norm)}))
    return out


def s3prl_hubert(path: Path, seed: int = 0):
    """A tiny HuBERT in s3prl's converted-checkpoint format {task_cfg, model_cfg, model_weight, ...}."""
    from s3prl.upstream.hubert.hubert_model import (
        HubertConfig,
        HubertModel,
        HubertPretrainingConfig,
    )
    from s3prl.upstream.utils import merge_with_parent

    torch.manual_seed(seed)
    model_cfg = {
        "_name": "hubert", "label_rate": 50, "extractor_mode": "default", "encoder_layers": 2,
        "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2,
        "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2", "conv_pos": 16,
        "conv_pos_groups": 4, "final_dim": 8, "layer_norm_first": False,
    }
    task_cfg = {"_name": "hubert_pretraining", "normalize": False, "labels": ["km"], "label_rate": 50,
                "sample_rate": 16000}
    symbols = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(10)]]
    model = HubertModel(merge_with_parent(HubertConfig, model_cfg), merge_with_parent(HubertPretrainingConfig, task_cfg),
                        symbols)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    torch.save({"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict(),
                "dictionaries_symbols": symbols}, path)
    return model


def torchaudio_from_s3prl(model, out: Path) -> Path:
    """torchaudio's fairseq importer applied to s3prl's (fairseq-derived) HuBERT."""
    from torchaudio.models.wav2vec2.utils import import_fairseq_model
    from torchaudio.models.wav2vec2.utils.import_fairseq import _parse_config

    ta = import_fairseq_model(model)
    torch.save(ta.state_dict(), out)
    kwargs = _parse_config(model)
    kwargs["aux_num_out"] = None
    out.with_suffix(".json").write_text(json.dumps({"factory": "wav2vec2_model", "kwargs": kwargs,
                                                    "normalize_waveform": False}))
    return out


SPEECHBRAIN_ECAPA_YAML = """\
n_mels: 80
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [16, 16, 16, 16, 48]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 8
    lin_neurons: 12
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
"""

SPEECHBRAIN_XVECTOR_YAML = """\
n_mels: 24
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 3
    tdnn_channels: [16, 16, 24]
    tdnn_kernel_sizes: [5, 3, 1]
    tdnn_dilations: [1, 2, 1]
    lin_neurons: 10
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
"""


def speechbrain_dir(folder: Path, kind: str = "ecapa", seed: int = 0) -> Path:
    """A SpeechBrain model directory (hyperparams.yaml + embedding_model.ckpt)."""
    from hyperpyyaml import load_hyperpyyaml

    folder.mkdir(parents=True, exist_ok=True)
    text = SPEECHBRAIN_ECAPA_YAML if kind == "ecapa" else SPEECHBRAIN_XVECTOR_YAML
    (folder / "hyperparams.yaml").write_text(text)
    torch.manual_seed(seed)
    hp = load_hyperpyyaml(text)
    model = hp["embedding_model"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    return folder
