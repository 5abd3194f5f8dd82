"""SpeechBrain speaker models: ECAPA-TDNN and x-vector.

Specs: ``speechbrain:speechbrain/spkrec-ecapa-voxceleb`` (a hub source; files go to
the HuggingFace cache), ``speechbrain:/path/to/dir`` (SpeechBrain's own layout:
``hyperparams.yaml`` + ``embedding_model.ckpt`` ...), or ``speechbrain:ecapa_tdnn`` /
``speechbrain:xvector`` for the published architectures with random weights
(``--random-init`` only).

Layers (features are 80-bin (ECAPA) or 24-bin (x-vector) fbanks at a 10 ms hop):
- ECAPA-TDNN: ``block_0`` (the TDNN block), ``block_1..3`` (SE-Res2Net blocks),
  ``mfa`` (multi-layer feature aggregation), all frame level; ``embedding`` (after
  attentive statistics pooling and the final linear layer), one frame.
- x-vector: ``tdnn_1..5`` (after each block's batch norm), frame level; ``pooling``
  (mean and std) and ``embedding``, one frame each.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from speechbrain.inference.speaker import EncoderClassifier
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.lobes.models.Xvector import Xvector
from speechbrain.processing.features import InputNormalization

from harness.audio import SAMPLE_RATE
from harness.errors import HarnessError
from harness.fsutil import default_home, sha256_file
from harness.offline import hub_cache_folder, require_network
from harness.upstream import Layers, Upstream, UpstreamInfo

HOP = 160
ARCHITECTURES = ("ecapa_tdnn", "xvector")


def _architecture(name: str):
    if name == "ecapa_tdnn":
        # the sizes of speechbrain/spkrec-ecapa-voxceleb
        model = ECAPA_TDNN(80, channels=[1024, 1024, 1024, 1024, 3072], kernel_sizes=[5, 3, 3, 3, 1],
                           dilations=[1, 2, 3, 4, 1], attention_channels=128, lin_neurons=192)
        return Fbank(n_mels=80), InputNormalization(norm_type="sentence", std_norm=False), model

    # the sizes of speechbrain/spkrec-xvect-voxceleb
    model = Xvector(in_channels=24, activation=torch.nn.LeakyReLU, tdnn_blocks=5,
                    tdnn_channels=[512, 512, 512, 512, 1500], tdnn_kernel_sizes=[5, 3, 3, 1, 1],
                    tdnn_dilations=[1, 2, 3, 1, 1], lin_neurons=512)
    return Fbank(n_mels=24), InputNormalization(norm_type="sentence", std_norm=False), model


def _load_pretrained(source: str):
    if source.startswith("@"):  # shipped with the harness (e.g. @tiny_dino/step_001500)

        local = Path(str(resources.files("harness.upstreams").joinpath("checkpoints", *source[1:].split("/"))))
        if not (local / "hyperparams.yaml").exists():
            raise HarnessError(f"no packaged SpeechBrain model {source[1:]!r}")
    else:
        local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "hyperparams.yaml").exists():
            raise HarnessError(f"{local} is not a SpeechBrain model directory (no hyperparams.yaml)")
        src = str(local.resolve())
    elif source.startswith((".", "/", "~")):
        raise HarnessError(f"SpeechBrain model directory {source} does not exist")
    else:
        cached = try_to_load_from_cache(source, "hyperparams.yaml")
        if not isinstance(cached, str):
            require_network(f"SpeechBrain model {source}", "huggingface.co",
                            f"run `harness upstreams fetch speechbrain:{source}` on a connected machine and copy "
                            f"{hub_cache_folder(source)} here, or pass speechbrain:/path/to/dir")
        src = source
    savedir = default_home() / "speechbrain" / hashlib.sha256(src.encode()).hexdigest()[:16]
    try:
        clf = EncoderClassifier.from_hparams(source=src, savedir=str(savedir), run_opts={"device": "cpu"})
    except Exception as exc:
        raise HarnessError(f"cannot load SpeechBrain model {source}: {str(exc).splitlines()[0][:300]}") from None
    if clf is None:
        raise HarnessError(f"cannot load SpeechBrain model {source}")
    ckpt = savedir / "embedding_model.ckpt"
    digest = sha256_file(ckpt.resolve()) if ckpt.exists() else None
    return clf.mods.compute_features, clf.mods.mean_var_norm, clf.mods.embedding_model, digest


def _shortest_input(up: "SpeechBrainUpstream", most_frames: int = 64) -> int:
    """The fewest samples this model runs on (ECAPA's reflect padding needs more feature frames
    than its widest dilation, 5 frames = 640 samples for the standard model; an x-vector's
    valid convolutions need 3), found by running it on silence of 1, 2, ... frames."""
    for frames in range(1, most_frames + 1):
        samples = max(1, (frames - 1) * HOP)
        try:
            up.layers(torch.zeros(1, samples), torch.tensor([samples]))
        except RuntimeError:
            continue
        return samples
    raise HarnessError(f"{up.info.spec} runs on no input shorter than {most_frames} frames; unsupported model")


class SpeechBrainUpstream(Upstream):
    """A SpeechBrain speaker encoder (ECAPA-TDNN or x-vector; a pretrained model directory or
    an architecture name), every block a layer and the embedding an utterance-level layer.
    """
    padding_sensitive = True  # 'same'-padded convolutions see the batch padding at the edges

    def __init__(self, features, norm, model, info: UpstreamInfo) -> None:
        super().__init__()
        self.features, self.norm, self.model = features, norm, model
        self.info = info
        self.eval()

    @classmethod
    def load(cls, source: str, random_init: bool = False, seed: int = 0) -> "SpeechBrainUpstream":
        if source in ARCHITECTURES:
            if not random_init:
                raise HarnessError(f"speechbrain:{source} names an architecture without weights: pass a hub source "
                                   "or a model directory, or use --random-init")
            features, norm, model = _architecture(source)
            digest = None
        else:
            features, norm, model, digest = _load_pretrained(source)
        if random_init:
            torch.manual_seed(seed)
            for module in model.modules():
                if hasattr(module, "reset_parameters") and module is not model:
                    module.reset_parameters()
            digest = None
        kind = type(model).__name__
        if kind == "ECAPA_TDNN":
            names = [f"block_{i}" for i in range(len(model.blocks))] + ["mfa", "embedding"]
            hops = [HOP] * (len(names) - 1) + [None]
        elif kind == "Xvector":
            n_tdnn = sum(1 for m in model.blocks if type(m).__name__ == "BatchNorm1d")
            names = [f"tdnn_{i}" for i in range(1, n_tdnn + 1)] + ["pooling", "embedding"]
            hops = [HOP] * n_tdnn + [None, None]
        else:
            raise HarnessError(f"unsupported SpeechBrain embedding model {kind}; ECAPA_TDNN and Xvector are supported")
        info = UpstreamInfo(spec=f"speechbrain:{source}", backend="speechbrain", source=source, layer_names=names,
                            dims=[], hop=HOP, weights_sha256=digest, random_init=random_init,
                            notes={"model": kind, "feature_hop": HOP}, layer_hops=hops)
        up = cls(features, norm, model, info)
        probe = up.layers(torch.zeros(1, SAMPLE_RATE), torch.tensor([SAMPLE_RATE]))
        up.info.dims = [h.shape[-1] for h in probe.hidden]
        up.info.min_samples = _shortest_input(up)
        return up

    @classmethod
    def fetch(cls, source: str) -> str:
        _load_pretrained(source)
        return f"SpeechBrain model {source} cached"

    @torch.no_grad()
    def layers(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:
        wavs = wavs.float()
        rel = lengths.float() / wavs.shape[1]
        feats = self.norm(self.features(wavs), rel)
        frames = torch.div(lengths, HOP, rounding_mode="floor") + 1
        captured: list[torch.Tensor] = []
        if type(self.model).__name__ == "ECAPA_TDNN":
            targets = list(self.model.blocks) + [self.model.mfa]
            channels_first = True
        else:
            targets = [m for m in self.model.blocks if type(m).__name__ in ("BatchNorm1d", "StatisticsPooling")]
            channels_first = False
        hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in targets]
        try:
            emb = self.model(feats, rel)
        finally:
            for h in hooks:
                h.remove()
        hidden = [c.transpose(1, 2) if channels_first else c for c in captured] + [emb]
        one = torch.ones_like(lengths)
        hops = list(self.info.layer_hops)
        lens = [frames if hop is not None else one for hop in hops]
        return Layers(hidden, lens, hops, list(self.info.layer_names))
