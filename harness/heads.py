"""Featurizer (one layer or a learned weighted sum) and the SUPERB task heads.

Shapes: frame features ``[batch, frames, dim]`` with ``lengths [batch]``; pooled
(utterance-mean) features ``[batch, dim]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Featurizer(nn.Module):
    """Select one layer, or mix several with softmax weights (zero-initialised, as in SUPERB).

    ``layer_norm`` normalises each layer over its feature dimension (no affine) before the
    sum; it makes the mix nonlinear per frame, so pooled caching is then not exact.
    """

    def __init__(self, layers: Sequence[int], weighted: bool, layer_norm: bool = False) -> None:
        super().__init__()
        self.layers = list(layers)
        self.weighted = weighted
        self.layer_norm = layer_norm
        if weighted:
            self.weights = nn.Parameter(torch.zeros(len(self.layers)))
        elif len(self.layers) != 1:
            raise ValueError("a single-layer featurizer takes exactly one layer")

    def mix(self) -> torch.Tensor | None:
        """Softmax of the learned layer weights ``[layers]`` (None for a single-layer featurizer)."""
        return F.softmax(self.weights, dim=0) if self.weighted else None

    def forward(self, hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        """hidden[l]: ``[batch, frames, dim]`` or ``[batch, dim]`` for every upstream layer."""
        if not self.weighted:
            return hidden[self.layers[0]].float()
        xs = [hidden[i].float() for i in self.layers]
        if self.layer_norm:
            xs = [F.layer_norm(x, x.shape[-1:]) for x in xs]
        w = self.mix()
        return sum(wk * x for wk, x in zip(w, xs))


class Head(nn.Module):
    """A task head: ``forward(features, lengths)``; ``output_lengths`` maps feature lengths
    to the head's output frames (the identity unless the head subsamples). The engine
    gives tasks these output lengths, so no task repeats a head's arithmetic."""

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[batch, frames, dim]`` -> ``[batch, dim]`` mean over the valid frames."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    return (x * mask[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)


class UtteranceHead(Head):
    """Linear(D, proj) -> mean pool -> one linear classifier per slot (SUPERB IC/SID).

    Because the first operation is linear, ``forward(mean of x)`` equals
    ``forward(x, lengths)``: the engine may cache per-layer utterance means.
    """

    def __init__(self, dim: int, classes: Sequence[int], proj: int = 256) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, proj)
        self.classifiers = nn.ModuleList(nn.Linear(proj, c) for c in classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> list[torch.Tensor]:
        h = self.proj(x)
        if x.dim() == 3:
            h = masked_mean(h, lengths)
        return [clf(h) for clf in self.classifiers]


class FrameLinear(Head):
    """Per-frame linear classifier (s3prl phone_linear)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(x)


class CtcLinear(Head):
    """Linear CTC head (SUPERB PR): log-probabilities ``[batch, frames, vocab + 1]`` (blank 0).

    ``proj`` > 0 first projects the features to ``proj`` dimensions with a linear layer (s3prl's
    ``ctc/libriphone.yaml``: ``project_dim: 256``, no activation between), as SUPERB's PR head
    does; 0 keeps the single linear layer of the quick protocol."""

    def __init__(self, dim: int, vocab: int, proj: int = 0) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, proj) if proj else None
        self.linear = nn.Linear(proj or dim, vocab + 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.proj is not None:
            x = self.proj(x)
        return F.log_softmax(self.linear(x), dim=-1)


class SpecAugment(nn.Module):
    """SpecAugment (Park et al. 2019) on a representation ``[B, T, D]`` during training: per
    utterance, a time warp (its valid frames split at a random centre that moves by up to
    ``warp_window`` frames, each side resized by bicubic interpolation), ``freq_masks`` bands of
    0 to ``freq_width - 1`` feature dimensions and ``time_masks`` spans of 0 to ``time_width - 1``
    frames set to zero. The defaults are s3prl 0.4.18's ASR recipe (``downstream/asr/config.yaml``,
    ``specaug``: warp window 5, 4 frequency masks below 50, 2 time masks below 40), as its
    runner applies it to the featurizer's output before the downstream model. Draws come from
    torch's global generator (seeded per run); in eval mode the input is returned unchanged.

    ``adaptive`` (s3prl's SNIPS recipe, ``downstream/ctc/snips.yaml``): the time masks scale with
    the padded length T: ``min(int(0.04 T), 20)`` of them, each narrower than
    ``min(time_width, int(0.04 T))`` frames."""

    def __init__(self, warp_window: int = 5, freq_masks: int = 4, freq_width: int = 50, time_masks: int = 2,
                 time_width: int = 40, adaptive: bool = False) -> None:
        super().__init__()
        self.warp_window, self.freq_masks, self.freq_width = warp_window, freq_masks, freq_width
        self.time_masks, self.time_width, self.adaptive = time_masks, time_width, adaptive

    def _warp(self, x: torch.Tensor) -> torch.Tensor:
        """One utterance's valid frames ``[T, D]`` warped in time (unchanged when T <= 2 x window)."""
        t, w = x.shape[0], self.warp_window
        if w <= 0 or t - w <= w:
            return x
        centre = int(torch.randint(w, t - w, (1,)))
        moved = int(torch.randint(centre - w, centre + w, (1,))) + 1
        img = x[None, None]  # [1, 1, T, D]: resize along time only
        left = F.interpolate(img[:, :, :centre], (moved, x.shape[1]), mode="bicubic", align_corners=False)
        right = F.interpolate(img[:, :, centre:], (t - moved, x.shape[1]), mode="bicubic", align_corners=False)
        return torch.cat([left, right], dim=2)[0, 0]

    @staticmethod
    def _mask(size: int, masks: int, width: int, batch: int, device) -> torch.Tensor:
        """``[batch, size]`` True where one of ``masks`` random spans of widths in [0, width) falls."""
        if masks <= 0 or width <= 0:
            return torch.zeros(batch, size, dtype=torch.bool, device=device)
        widths = torch.randint(0, width, (batch, masks, 1), device=device)
        starts = torch.randint(0, max(1, size - int(widths.max())), (batch, masks, 1), device=device)
        at = torch.arange(size, device=device)[None, None, :]
        return ((starts <= at) & (at < starts + widths)).any(dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, D]`` with valid frame counts ``lengths`` ``[B]`` -> the same shape."""
        if not self.training:
            return x
        warped = torch.zeros_like(x)
        for i, n in enumerate(lengths.tolist()):
            warped[i, :n] = self._warp(x[i, :n])
        b, t, d = x.shape
        masks, width = self.time_masks, self.time_width
        if self.adaptive:
            masks, width = min(int(0.04 * t), 20), min(width, int(0.04 * t))
        freq = self._mask(d, self.freq_masks, self.freq_width, b, x.device)[:, None, :]
        time = self._mask(t, masks, width, b, x.device)[:, :, None]
        return warped.masked_fill(freq | time, 0.0)


class BiLstmCtc(Head):
    """Projection -> BiLSTM stack -> linear CTC output (SUPERB ASR).

    ``downsample`` k > 1 concatenates k consecutive projected frames before the LSTM (s3prl's
    RNN downstream does the same with ``sample_style: concat``): output frames = input // k,
    which makes 100 Hz features as cheap as 50 Hz ones for the sequential LSTM. ``specaug``:
    :class:`SpecAugment` on the input features while training (s3prl's ASR recipe);
    ``final_dropout``: dropout also after the last LSTM layer (torch's LSTM drops out between
    layers only; s3prl's RNN stack drops out after every layer)."""

    def __init__(self, dim: int, vocab: int, proj: int = 1024, hidden: int = 1024, layers: int = 2,
                 dropout: float = 0.2, downsample: int = 1, specaug: bool | str = False,
                 final_dropout: bool = False) -> None:
        super().__init__()
        if downsample < 1:
            raise ValueError("downsample must be >= 1")
        self.downsample = downsample
        self.specaug = SpecAugment(adaptive=specaug == "adaptive") if specaug else None
        self.proj = nn.Linear(dim, proj)
        self.lstm = nn.LSTM(proj * downsample, hidden, num_layers=layers, bidirectional=True, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.final_dropout = nn.Dropout(dropout) if final_dropout else None
        self.out = nn.Linear(2 * hidden, vocab + 1)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.downsample, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, T, dim]`` -> log-probs ``[B, T // downsample, vocab + 1]``."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        if self.specaug is not None:
            x = self.specaug(x, lengths)
        h = self.proj(x)
        k = self.downsample
        if k > 1:
            frames = h.shape[1] // k
            h = h[:, : frames * k].reshape(h.shape[0], frames, k * h.shape[2])
        lengths = self.output_lengths(lengths)
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1] // k)
        if self.final_dropout is not None:
            h = self.final_dropout(h)
        return F.log_softmax(self.out(h), dim=-1)


class Probe(nn.Module):
    """Featurizer + head: one layer setting of one task."""

    def __init__(self, featurizer: Featurizer, head: Head) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.head = head

    def forward(self, hidden: Sequence[torch.Tensor], lengths: torch.Tensor | None):
        return self.head(self.featurizer(hidden), lengths)

    def outputs(self, hidden: Sequence[torch.Tensor], batch: dict) -> tuple:
        """(head output, the batch as the task sees it: ``lengths`` are the head's output frames).

        The head gets the frame counts of the probe's own layers (``batch["layer_lengths"]``
        when present: an utterance-level layer has one frame), else ``batch["lengths"]``."""
        per_layer = batch.get("layer_lengths")
        lengths = per_layer[self.featurizer.layers[0]] if per_layer is not None else batch["lengths"]
        out_lengths = lengths if lengths is None else self.head.output_lengths(lengths)
        return self(hidden, lengths), dict(batch, lengths=out_lengths)


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks (0). Token ids are 1-based."""
    best = log_probs.argmax(-1).cpu()
    out = []
    for seq, n in zip(best, lengths.tolist()):
        ids, prev = [], 0
        for t in seq[:n].tolist():
            if t != prev and t != 0:
                ids.append(t)
            prev = t
        out.append(ids)
    return out


class XVectorHead(Head):
    """SUPERB ASV's x-vector head: TDNN layers over frames -> statistics pooling (mean and
    standard deviation over valid frames) -> linear embedding; an additive-margin softmax
    classifier over the training speakers (the task applies the margin to these cosines).
    TDNN layers pad to keep the length, so an utterance-level layer (one frame) passes too.

    ``forward`` returns ``(embedding [B, E], cosines to the speakers' weight vectors [B, speakers])``."""

    def __init__(self, dim: int, speakers: int, channels: int = 256, embedding: int = 256) -> None:
        super().__init__()
        layers, c_in = [], dim
        for kernel, dilation, c_out in ((5, 1, channels), (3, 2, channels), (3, 3, channels), (1, 1, channels),
                                        (1, 1, 3 * channels)):
            layers += [nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2),
                       nn.ReLU(), nn.BatchNorm1d(c_out)]
            c_in = c_out
        self.tdnn = nn.Sequential(*layers)
        self.embed = nn.Linear(2 * c_in, embedding)
        self.weight = nn.Parameter(torch.randn(speakers, embedding) * 0.01)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() == 2:  # a pooled or utterance-level feature: one frame
            x = x[:, None]
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        h = self.tdnn(x.transpose(1, 2)).transpose(1, 2)  # [B, T, C]
        mask = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]).to(h.dtype)[..., None]
        n = lengths.clamp(min=1)[:, None].to(h.dtype)
        mean = (h * mask).sum(1) / n
        var = (((h - mean[:, None]) ** 2) * mask).sum(1) / n
        emb = self.embed(torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=1))
        cos = F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).T
        return emb, cos


class SpanLinear(Head):
    """A linear classifier on mean-pooled spans of frames (segment-level probes: syllables,
    words). ``forward(x [B, T, D])`` gives per-frame logits; :meth:`pool` averages them over
    each span, which equals classifying the span's mean feature (the map is linear)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(x)

    @staticmethod
    def pool(logits: torch.Tensor, utt: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """``[spans, classes]``: the mean of ``logits[utt[k], first[k]:last[k]]`` for every span k."""
        cums = torch.cat([torch.zeros_like(logits[:, :1]), logits.cumsum(1)], dim=1)  # [B, T + 1, C]
        total = cums[utt, last] - cums[utt, first]
        return total / (last - first).clamp(min=1)[:, None].to(logits.dtype)


class SuperbXVectorHead(Head):
    """s3prl 0.4.18's ASV head (``downstream/sv_voxceleb1``, config ``amsoftmax.yaml``, model.py):

    Linear(D, C) connector -> five TDNN layers (context 5/3/3/1/1, dilation 1/2/3/1/1, ReLU, no
    BatchNorm, no dropout, **valid** convolutions: 14 frames shorter) of C channels, the last of
    ``pooled`` (1500) -> statistics pooling (mean and unbiased standard deviation over the valid
    frames) -> Linear(2 * pooled, E) + ReLU = the scored embedding (s3prl's ``inference``) ->
    Linear(E, E) + ReLU -> the additive-margin softmax over the training speakers (weights
    Xavier-normal, as s3prl's ``AMSoftmaxLoss``). s3prl ties C = E = 512 (``input_dim``).

    ``forward`` returns ``(embedding [B, E], cosines to the speakers' weight vectors
    [B, speakers])``. Inputs shorter than 15 frames (an utterance-level layer has one) are
    zero-padded to 15 so one output frame remains (s3prl would fail on them). s3prl's pooling
    counts one padded frame past each padded utterance's end; this head pools the valid frames only.
    """

    CONTEXT = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))  # (kernel, dilation) of the five TDNN layers
    SHRINK = sum((k - 1) * d for k, d in CONTEXT)  # 14 frames

    def __init__(self, dim: int, speakers: int, channels: int = 512, pooled: int = 1500,
                 embedding: int = 512) -> None:
        super().__init__()
        self.connector = nn.Linear(dim, channels)
        layers, c_in = [], channels
        for i, (kernel, dilation) in enumerate(self.CONTEXT):
            c_out = pooled if i == len(self.CONTEXT) - 1 else channels
            layers += [nn.Conv1d(c_in, c_out, kernel, dilation=dilation), nn.ReLU()]
            c_in = c_out
        self.tdnn = nn.Sequential(*layers)
        self.embed = nn.Linear(2 * pooled, embedding)
        self.hidden = nn.Linear(embedding, embedding)
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(speakers, embedding)))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths - self.SHRINK).clamp(min=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() == 2:  # a pooled or utterance-level feature: one frame
            x = x[:, None]
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        if x.shape[1] <= self.SHRINK:
            x = F.pad(x, (0, 0, 0, self.SHRINK + 1 - x.shape[1]))
        h = self.tdnn(self.connector(x).transpose(1, 2)).transpose(1, 2)  # [B, T - 14, pooled]
        n = self.output_lengths(lengths.to(h.device))
        mask = (torch.arange(h.shape[1], device=h.device)[None, :] < n[:, None]).to(h.dtype)[..., None]
        count = n[:, None].to(h.dtype)
        mean = (h * mask).sum(1) / count
        var = (((h - mean[:, None]) ** 2) * mask).sum(1) / (count - 1).clamp(min=1)
        emb = F.relu(self.embed(torch.cat([mean, var.clamp(min=1e-12).sqrt()], dim=1)))
        hidden = F.relu(self.hidden(emb))
        cos = F.normalize(hidden, dim=1) @ F.normalize(self.weight, dim=1).T
        return emb, cos
