"""torchaudio backend: pipeline bundles and state-dict files.

Specs:
- ``torchaudio:HUBERT_BASE`` (any wav2vec2-family bundle in ``torchaudio.pipelines``;
  weights download into torch.hub's cache on first use);
- ``torchaudio:hubert_base=/path/weights.pt``: a factory of ``torchaudio.models``
  with a state-dict file (loaded with ``weights_only=True``);
- ``torchaudio:/path/weights.pt`` with ``/path/weights.json`` beside it holding
  ``{"factory": "wav2vec2_model", "kwargs": {...}}`` for non-standard sizes;
- ``torchaudio:hubert_base`` (a factory alone): the architecture with random
  weights; only allowed with ``--random-init``.

Layers come from forward pre-hooks on every transformer layer (its input) plus the
encoder output, the same points s3prl hooks: index 0 is the input to the first
transformer layer; the last is the encoder output (with the final layer norm for
``layer_norm_first`` models).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchaudio
import torchaudio.models as models

from harness.errors import HarnessError
from harness.fsutil import sha256_file
from harness.offline import require_network
from harness.upstream import (
    Layers,
    Upstream,
    UpstreamInfo,
    conv_frames,
    normalise_waveforms,
    receptive_field,
)

_FACTORIES = (
    "wav2vec2_model", "wavlm_model", "hubert_base", "hubert_large", "hubert_xlarge", "wav2vec2_base",
    "wav2vec2_large", "wav2vec2_large_lv60k", "wavlm_base", "wavlm_large",
)


def _factory(name: str):
    if name not in _FACTORIES:
        raise HarnessError(f"unknown torchaudio model factory {name!r}; choose from {', '.join(_FACTORIES)}")
    return getattr(models, name)


def normalises_waveform(model, factory: str | None = None) -> bool:
    """Whether this model takes per-utterance zero-mean unit-variance waveforms, by torchaudio's own
    bundles: the bundle of the same name (``hubert_large`` -> ``HUBERT_LARGE``) says so in its
    ``_normalize_waveform``; any other model follows the rule every bundle obeys: models whose
    encoder applies layer norm first (fairseq's ``layer_norm_first``: the Large LV-60k/HuBERT
    Large/WavLM Large family) normalise, the others do not. torchaudio's transformer stores the
    opposite flag (``encoder.transformer.layer_norm_first`` is True when the encoder's is False:
    it then norms the input of the stack instead of the output), which the old rule read as is
    and so normalised every Base model and no Large one."""
    bundle = getattr(torchaudio.pipelines, factory.upper(), None) if factory else None
    if bundle is not None and hasattr(bundle, "_normalize_waveform"):
        return bool(bundle._normalize_waveform)
    return not bool(model.encoder.transformer.layer_norm_first)


def _from_bundle(name: str):
    bundle = getattr(torchaudio.pipelines, name, None)
    if bundle is None or not hasattr(bundle, "get_model"):
        raise HarnessError(f"torchaudio.pipelines has no model bundle {name!r}")
    url_name = Path(bundle._path).name
    cache = Path(torch.hub.get_dir()) / "checkpoints" / url_name
    if not cache.exists():
        require_network(f"torchaudio bundle {name}", "download.pytorch.org",
                        f"run `harness upstreams fetch torchaudio:{name}` on a connected machine and copy {cache} here")
    try:
        model = bundle.get_model()
    except Exception as exc:
        raise HarnessError(f"cannot load torchaudio bundle {name}: {str(exc).splitlines()[0]}") from None
    return model, sha256_file(cache) if cache.exists() else None, bool(getattr(bundle, "_normalize_waveform", False))


def _load_state(path: Path) -> dict:
    if not path.exists():
        raise HarnessError(f"state-dict file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HarnessError(f"cannot read state dict {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise HarnessError(f"{path} does not hold a state dict")
    return state.get("state_dict", state)


class TorchaudioUpstream(Upstream):
    """A torchaudio wav2vec2/HuBERT model (a pipeline bundle name, or an architecture with a state
    dict file), every transformer layer's output a layer.
    """
    chunkable = True  # self-attention: memory quadratic in length

    def __init__(self, model, normalize: bool, info: UpstreamInfo) -> None:
        super().__init__()
        self.model = model.eval()
        self.normalize = normalize
        self.info = info
        first = model.feature_extractor.conv_layers[0].layer_norm
        # torchaudio's WavLM attention takes no padding mask, so it cannot batch unequal lengths
        self._wavlm = any(type(m).__name__ == "WavLMSelfAttention" for m in model.modules())
        self.padding_sensitive = isinstance(first, torch.nn.GroupNorm) or self._wavlm
        self._kernels = [layer.conv.kernel_size[0] for layer in model.feature_extractor.conv_layers]
        self._strides = [layer.conv.stride[0] for layer in model.feature_extractor.conv_layers]

    @classmethod
    def load(cls, source: str, random_init: bool = False, seed: int = 0) -> "TorchaudioUpstream":
        digest, normalize = None, False
        factory_name, sep, file = source.partition("=")
        if source.endswith((".pt", ".pth", ".ckpt")) and not sep:
            path = Path(source).expanduser()
            sidecar = path.with_suffix(".json")
            if not sidecar.exists():
                raise HarnessError(f"{path} needs {sidecar} with the model factory and its kwargs")
            spec = json.loads(sidecar.read_text())
            model = _factory(spec["factory"])(**spec.get("kwargs", {}))
            normalize = bool(spec.get("normalize_waveform", normalises_waveform(model, spec["factory"])))
            if not random_init:
                model.load_state_dict(_load_state(path))
                digest = sha256_file(path)
        elif sep:
            model = _factory(factory_name)()
            normalize = normalises_waveform(model, factory_name)
            if not random_init:
                path = Path(file).expanduser()
                model.load_state_dict(_load_state(path))
                digest = sha256_file(path)
        elif source in _FACTORIES:
            if not random_init:
                raise HarnessError(f"torchaudio:{source} names an architecture without weights: add =/path/weights.pt, "
                                   "use a pipeline bundle name (e.g. HUBERT_BASE), or pass --random-init")
            model = _factory(source)()
            normalize = normalises_waveform(model, source)
        else:
            if random_init:
                bundle = getattr(torchaudio.pipelines, source, None)
                if bundle is None:
                    raise HarnessError(f"torchaudio.pipelines has no model bundle {source!r}")
                if not hasattr(bundle, "_params"):
                    raise HarnessError(f"cannot build the architecture of bundle {source} without its weights")
                factory = "wavlm_model" if getattr(bundle, "_model_type", "") == "WavLM" else "wav2vec2_model"
                model = _factory(factory)(**bundle._params)
                normalize = bool(getattr(bundle, "_normalize_waveform", False))
            else:
                model, digest, normalize = _from_bundle(source)
        if random_init:
            torch.manual_seed(seed)
            for module in model.modules():
                if hasattr(module, "reset_parameters") and module is not model:
                    module.reset_parameters()
        model.encoder.transformer.layer_drop = 0.0
        n = len(model.encoder.transformer.layers)
        dim = model.encoder.feature_projection.projection.out_features
        hop = 1
        for layer in model.feature_extractor.conv_layers:
            hop *= layer.conv.stride[0]
        info = UpstreamInfo(
            spec=f"torchaudio:{source}", backend="torchaudio", source=source,
            layer_names=["cnn"] + [f"transformer_{i}" for i in range(1, n + 1)], dims=[dim] * (n + 1), hop=hop,
            weights_sha256=digest, random_init=random_init,
            frame_offset=receptive_field([l.conv.kernel_size[0] for l in model.feature_extractor.conv_layers],
                                         [l.conv.stride[0] for l in model.feature_extractor.conv_layers]) // 2,
            notes={"layer_norm_first": bool(model.encoder.transformer.layer_norm_first), "normalize_waveform": bool(normalize)},
            revision=1,  # 1: waveform normalisation as torchaudio's bundles (was reversed for factory+weights specs)
        )
        return cls(model, bool(normalize), info)

    @classmethod
    def fetch(cls, source: str) -> str:
        _, digest, _ = _from_bundle(source)
        return f"torchaudio bundle {source} cached (sha256 {digest})"

    @torch.no_grad()
    def layers(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:
        wavs = wavs.float()
        if self.normalize:
            wavs = normalise_waveforms(wavs, lengths)
        captured: list[torch.Tensor] = []
        hooks = [layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
                 for layer in self.model.encoder.transformer.layers]
        try:
            padded = bool((lengths < wavs.shape[1]).any())
            if padded and self._wavlm:
                raise ValueError("torchaudio WavLM cannot run a padded batch; batch equal lengths only")
            x, _ = self.model.feature_extractor(wavs, None)
            frames = conv_frames(lengths, self._kernels, self._strides)
            out = self.model.encoder(x, frames if padded else None)
        finally:
            for h in hooks:
                h.remove()
        hidden = captured + [out]
        return Layers(hidden, [frames] * len(hidden), [self.info.hop] * len(hidden), list(self.info.layer_names))
