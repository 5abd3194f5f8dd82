"""HuggingFace transformers backend: ``hf:<model id>`` or ``hf:<local directory>``.

Works for the wav2vec 2.0 family (wav2vec2, HuBERT, WavLM, data2vec-audio,
DistilHuBERT checkpoints saved as HubertModel).

Index mapping (L transformer layers, L + 1 harness layers):
- layer i < L  = ``hidden_states[i]`` of ``output_hidden_states=True`` (0 is the input
  to the first transformer layer);
- layer L      = ``last_hidden_state``, the encoder output.
For post-norm models (all Base models) ``last_hidden_state == hidden_states[L]``. For
'stable layer norm' models (``do_stable_layer_norm``: the Large lv60 models, WavLM
Large) the encoder output has the final layer norm applied; transformers 5 records
``hidden_states[L]`` before that norm, s3prl's hook after it. We follow s3prl, so an
index means the same in both backends. (CCA/CKA users: in those models part of the
change at the top layer is that layer norm.)

Padding: models with a group-norm CNN (``feat_extract_norm == "group"``, all Base
models) normalise over the whole time axis, so zero padding changes every frame;
they are marked padding-sensitive and the batcher only groups equal lengths. Layer-
norm models get an attention mask.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import AutoConfig, AutoModel
from transformers.utils import logging as hf_logging

from harness.errors import HarnessError
from harness.fsutil import sha256_file
from harness.offline import hub_cache_folder, require_network
from harness.upstream import (
    Layers,
    Upstream,
    UpstreamInfo,
    normalise_waveforms,
    receptive_field,
)

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' info-level chatter (token-id notes on speech configs, load reports listing
    the pretraining-only weights a bare encoder leaves out, a progress bar per load) off for
    the block; its errors still raise."""
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _resolve(source: str) -> Path:
    if source.startswith("@"):  # shipped with the harness: an architecture (config only) or a checkpoint

        base = resources.files("harness.upstreams")
        for kind in ("checkpoints", "architectures"):
            packaged = Path(str(base.joinpath(kind, *source[1:].split("/"))))
            if (packaged / "config.json").exists():
                return packaged
        raise HarnessError(f"no packaged architecture or checkpoint {source[1:]!r}")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise HarnessError(f"{path} is not a HuggingFace model directory (no config.json)")
        return path
    if source.startswith((".", "/", "~")):
        raise HarnessError(f"HuggingFace model directory {source} does not exist")

    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    try:
        return Path(snapshot_download(source, local_files_only=True, allow_patterns=patterns))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    require_network(
        f"HuggingFace model {source}", "huggingface.co",
        f"run `harness upstreams fetch hf:{source}` on a connected machine and copy its "
        f"{hub_cache_folder(source)} folder here, or pass hf:/path/to/a/saved/dir",
    )
    try:
        return Path(snapshot_download(source, allow_patterns=patterns))
    except Exception as exc:  # network errors, missing repos, gated models
        raise HarnessError(f"cannot download HuggingFace model {source}: {str(exc).splitlines()[0]}") from None


def weights_digest(folder: Path) -> str:
    """sha256 of the weight file (of the concatenated digests when sharded)."""
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".safetensors", ".bin")))
    if not files:
        raise HarnessError(f"{folder} holds no weight file ({' or '.join(_WEIGHT_FILES)})")
    if len(files) == 1:
        return sha256_file(files[0])

    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()


class HFUpstream(Upstream):
    """A HuggingFace wav2vec2-family model (wav2vec 2.0, HuBERT, WavLM, data2vec audio) from a model
    directory or the hub cache; every hidden state is a layer (layer 0: the transformer's input).
    """
    chunkable = True  # self-attention: memory quadratic in length

    def __init__(self, model, normalize: bool, info: UpstreamInfo) -> None:
        super().__init__()
        self.model = model.eval()
        self.normalize = normalize
        self.info = info
        self.padding_sensitive = getattr(model.config, "feat_extract_norm", "group") == "group"

    @classmethod
    def load(cls, source: str, random_init: bool = False, seed: int = 0) -> "HFUpstream":
        folder = _resolve(source)
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(folder)
        for attr, value in (("layerdrop", 0.0), ("apply_spec_augment", False), ("mask_time_prob", 0.0)):
            if hasattr(config, attr):
                setattr(config, attr, value)  # extraction must see every layer, unmasked
        if not random_init and not any((folder / name).exists() for name in _WEIGHT_FILES):
            raise HarnessError(f"hf:{source} is an architecture without weights; use --random-init")
        if random_init:
            torch.manual_seed(seed)
            model = AutoModel.from_config(config)
            digest = None
        else:
            try:
                # float32 whatever the stored dtype (shipped checkpoints are stored as float16)
                with _quiet_transformers():  # no load report for the pretraining heads left out
                    model = AutoModel.from_pretrained(folder, config=config, dtype=torch.float32)
            except (OSError, ValueError) as exc:
                raise HarnessError(f"cannot load HuggingFace model from {folder}: {str(exc).splitlines()[0]}") from None
            digest = weights_digest(folder)
        if not hasattr(model, "feature_extractor") or not hasattr(model, "encoder"):
            raise HarnessError(f"{source}: {type(model).__name__} is not a wav2vec2-family speech model")
        normalize = _wants_normalisation(folder, config)
        n = config.num_hidden_layers
        info = UpstreamInfo(
            spec=f"hf:{source}", backend="hf", source=str(source),
            layer_names=["cnn"] + [f"transformer_{i}" for i in range(1, n + 1)],
            dims=[config.hidden_size] * (n + 1), hop=int(torch.tensor(config.conv_stride).prod()),
            weights_sha256=digest, random_init=random_init,
            frame_offset=receptive_field(config.conv_kernel, config.conv_stride) // 2,
            min_samples=receptive_field(config.conv_kernel, config.conv_stride),
            notes={"model_type": config.model_type, "stable_layer_norm": bool(getattr(config, "do_stable_layer_norm", False)),
                   "normalize_waveform": normalize},
        )
        up = cls(model, normalize, info)
        up.folder = folder  # the resolved model directory (fine-tuning reloads it with a training config)
        return up

    @classmethod
    def fetch(cls, source: str) -> str:
        """Download into the HuggingFace cache for later offline use."""
        return f"HuggingFace model {source} cached in {_resolve(source)}"

    @torch.no_grad()
    def attentions(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """Per transformer layer ``[heads, T, T]`` for one utterance (no padding). The eager
        attention kernel is switched on for the call only (the fused one returns no maps and
        extraction keeps its own numbers)."""
        x = wav.float()[None]
        if self.normalize:
            x = normalise_waveforms(x, torch.tensor([x.shape[1]], device=x.device))
        previous = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            out = self.model(input_values=x, output_attentions=True)
        finally:
            self.model.set_attn_implementation(previous)
        return [a[0].float() for a in out.attentions]

    @torch.no_grad()
    def layers(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:
        wavs = wavs.float()
        mask = (torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lengths[:, None]).long()
        if self.normalize:
            wavs = normalise_waveforms(wavs, lengths)
        padded = bool((lengths < wavs.shape[1]).any())
        out = self.model(input_values=wavs, attention_mask=mask if padded else None, output_hidden_states=True)
        # HF's formula goes negative below the receptive field (-1 for 50 samples), and a slice
        # [:-1] would then keep padded frames: such an utterance has no frame of its own
        frames = self.model._get_feat_extract_output_lengths(lengths).long().clamp(min=0)
        hidden = list(out.hidden_states[:-1]) + [out.last_hidden_state]  # see the index mapping above
        hop = self.info.hop
        return Layers(hidden, [frames] * len(hidden), [hop] * len(hidden), list(self.info.layer_names))


def _wants_normalisation(folder: Path, config) -> bool:
    """Per-utterance zero-mean unit-variance input, as the model's feature extractor says."""
    pre = folder / "preprocessor_config.json"
    if pre.exists():
        return bool(json.loads(pre.read_text()).get("do_normalize", False))
    return getattr(config, "feat_extract_norm", "group") == "layer"
