"""s3prl backend: ``s3prl:<name>`` for any ``S3PRLUpstream.available_names()`` entry,
and ``s3prl:<name>=<path>`` for local converted checkpoints (e.g.
``s3prl:hubert_local=/ckpt/hubert_base_ls960.pt``, also ``wavlm_local``,
``wav2vec2_local``), both through ``s3prl.nn.S3PRLUpstream``.

s3prl's hidden states come from hooks: the input of every transformer layer plus the
encoder output (13 for Base, 25 for Large), which is the harness's layer convention.
s3prl reports lengths as ceil(samples / 320) and pads the last frame by repetition;
for models with a wav2vec2-style CNN we report the true CNN output length instead.

Importing the s3prl hub takes several seconds, so it happens only here, lazily.
s3prl downloads weights into ``~/.cache/s3prl/download``.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.fsutil import sha256_file
from harness.upstream import (
    Layers,
    Upstream,
    UpstreamInfo,
    conv_frames,
    receptive_field,
)

_CACHE_HINT = "~/.cache/s3prl/download"


def state_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _find_cnn(module: torch.nn.Module):
    for name, sub in module.named_modules():
        if name.endswith("feature_extractor") and hasattr(sub, "conv_layers"):
            return sub
    return None


def _encoder_layers(module: torch.nn.Module) -> int | None:
    for name, sub in module.named_modules():
        if name.endswith("encoder") and hasattr(sub, "layers"):
            return len(sub.layers)
    return None


class S3prlUpstream(Upstream):
    """Any model of s3prl's hub (``s3prl:NAME``, or a local checkpoint), every hidden state a layer,
    as s3prl's own featurizer sees them.
    """
    chunkable = True  # self-attention: memory quadratic in length

    def __init__(self, upstream, info: UpstreamInfo) -> None:
        super().__init__()
        self.upstream = upstream.eval()
        self.info = info
        cnn = _find_cnn(upstream)
        self._conv = None
        if cnn is not None:
            convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv1d)]
            self._conv = ([c.kernel_size[0] for c in convs], [c.stride[0] for c in convs])
            self.padding_sensitive = any(isinstance(m, torch.nn.GroupNorm) for m in cnn.modules())
            info.frame_offset = receptive_field(*self._conv) // 2
            info.min_samples = receptive_field(*self._conv)
        elif info.hop:
            info.frame_offset = info.hop // 2

    @classmethod
    def load(cls, source: str, random_init: bool = False, seed: int = 0) -> "S3prlUpstream":
        name, sep, path = source.partition("=")
        if sep:
            path = str(Path(path).expanduser())
            if not Path(path).exists():
                raise HarnessError(f"s3prl checkpoint {path} does not exist")
        try:
            from s3prl.nn import S3PRLUpstream
        except ImportError as exc:
            raise HarnessError(f"s3prl cannot be imported ({exc}); it needs torchaudio < 2.9") from None
        if name not in S3PRLUpstream.available_names():
            raise HarnessError(f"s3prl has no upstream {name!r}; see `python -c \"from s3prl.nn import "
                               "S3PRLUpstream; print(S3PRLUpstream.available_names())\"`")
        torch.manual_seed(seed)
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(10)  # a dead network must fail in seconds, not minutes
        try:
            upstream = S3PRLUpstream(name, path_or_url=path if sep else None, randomize=random_init)
        except HarnessError:
            raise
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if any(k in text for k in ("Connection", "resolve", "Name or service", "timed out", "URLError", "HTTPS")):
                raise HarnessError(
                    f"s3prl upstream {name} is not in {_CACHE_HINT} and cannot be downloaded (no network): run "
                    f"`harness upstreams fetch s3prl:{name}` on a connected machine and copy {_CACHE_HINT} here") from None
            raise HarnessError(f"cannot load s3prl upstream {source}: {text.splitlines()[0][:300]}") from None
        finally:
            socket.setdefaulttimeout(old_timeout)
        n = upstream.num_layers
        enc = _encoder_layers(upstream)
        names = (["cnn"] + [f"transformer_{i}" for i in range(1, n)]) if enc == n - 1 else [f"hidden_{i}" for i in range(n)]
        rates = set(upstream.downsample_rates)
        digest = None if random_init else (sha256_file(path) if sep else state_digest(upstream))
        info = UpstreamInfo(
            spec=f"s3prl:{source}", backend="s3prl", source=source, layer_names=names,
            dims=list(upstream.hidden_sizes), hop=rates.pop() if len(rates) == 1 else None,
            weights_sha256=digest, random_init=random_init,
            notes={"weights_digest_of": "checkpoint file" if sep else "state dict"},
        )
        return cls(upstream, info)

    @classmethod
    def fetch(cls, source: str) -> str:
        up = cls.load(source)
        return f"s3prl upstream {source} cached ({up.num_layers} layers)"

    @torch.no_grad()
    def layers(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:
        hidden, lens = self.upstream(wavs.float(), lengths)
        if self._conv is not None:
            true = conv_frames(lengths, *self._conv)
            lens = [torch.minimum(n.to(true.device), true) for n in lens]
            longest = int(true.max())
            hidden = [h[:, :longest] for h in hidden]
        return Layers(list(hidden), list(lens), list(self.upstream.downsample_rates), list(self.info.layer_names))
