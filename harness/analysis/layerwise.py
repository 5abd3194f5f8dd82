"""Layerwise analyses on the upstream interface: CCA with acoustic/phone/word properties,
CKA between layers of one or two models, and both across training checkpoints.

Protocol for CCA (after Pasad, Shi and Livescu's layer-wise analysis):
- ``mel``: 80-bin log-mel (Kaldi fbank, 10 ms) taken at each layer frame's centre time;
- ``phone``: one sample per phone segment (silence excluded): the layer's mean over the
  middle third of the segment's frames, paired with the phone's one-hot vector;
- ``word``: one sample per token of the most frequent words: the mean over the word's
  frames, paired with the word's one-hot vector;
- ``syllable``, ``position``, ``speaker``: the other levels of :mod:`harness.levels` (a
  syllable's or an utterance's mean frame against its one-hot; every frame against its
  word-position one-hot).
One-hot properties drop their last column (the centred one-hot covariance is otherwise
singular by construction). Scoring follows :class:`CcaProtocol`: 10 label-stratified folds,
3 trials with their own dev and test fold, CCA fitted on the other 8 for every pair of
per-view epsilons (reference convention: ridge epsilon x max|C| per view, flat dimensions
dropped), the pair chosen on dev, the held-out PWCCA weighted by the view with fewer
neurons (the property), mean over trials. Failed fits are rows with an error, never
dropped.
"""

from __future__ import annotations

import csv
import io
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.audio import SAMPLE_RATE
from harness.corpus.layout import ALIGNMENT_DIR, CorpusPaths
from harness.data import read_ctm, read_librispeech
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.fsutil import write_text
from harness.analysis.measures import SimilarityError, linear_cka, pwcca_score
from harness.task import Example


@dataclass
class Utterances:
    examples: list[Example]
    phones: dict  # utt -> CTM segments
    words: dict
    split: str = "dev"  # harness split name: the feature cache is shared with the probing tasks


def load_utterances(data_root: Path, split: str, limit: int | None = None) -> Utterances:
    name = LIBRI_SPLITS.get(split, split)
    utts = read_librispeech(data_root, name)
    if limit:
        utts = utts[:limit]
    ali = CorpusPaths(Path(data_root)).alignments
    if not ali.exists():  # data_root may be the LibriSpeech folder itself
        ali = Path(data_root) / ALIGNMENT_DIR
    phones, words = read_ctm(ali / f"{name}.phones.ctm"), read_ctm(ali / f"{name}.words.ctm")
    examples = [Example(u.id, u.path, None) for u in utts if u.id in phones]
    if not examples:
        raise HarnessError(f"no utterance of {name} has alignments in {ali}")
    return Utterances(examples, phones, words, split)


def cached_layers(upstream, utts: Utterances, progress: bool = True):
    """The feature cache of these utterances (every layer), memory-mapped: ``.get(id)``."""
    from harness.features.cache import ensure_features

    return ensure_features(upstream, "librispeech", utts.split, utts.examples, kind="frames", progress=progress)


def layer_frames(upstream, utts: Utterances, progress: bool = True) -> list[list[np.ndarray]]:
    """Per utterance, per layer ``[frames, dim]`` float32, through the feature cache (in memory)."""
    feats = cached_layers(upstream, utts, progress)
    return [[t.numpy() for t in feats.get(e.id)] for e in utts.examples]


def _pair_indices(na: int, hop_a: int, off_a: int, nb: int, hop_b: int, off_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices pairing two frame grids of one utterance by time (each frame of the
    coarser grid with the finer grid's frame nearest its centre)."""
    if hop_a >= hop_b:
        ia = np.arange(na)
        ib = np.clip(np.round((_centres(na, hop_a, off_a) - off_b) / hop_b).astype(int), 0, nb - 1)
    else:
        ib = np.arange(nb)
        ia = np.clip(np.round((_centres(nb, hop_b, off_b) - off_a) / hop_a).astype(int), 0, na - 1)
    return ia, ib


def minibatch_cka_grid(ua, fa, ub, fb, examples: list[Example], batch: int) -> np.ndarray:
    """Mini-batch CKA (Nguyen et al. 2021) of every layer pair over *all* frames paired by time,
    reading one utterance at a time from the caches ``fa``/``fb`` and holding only one batch
    of ``batch`` frames (its Gram matrices) at a time. Returns ``[layers_a, layers_b]``."""
    from harness.analysis.measures import hsic_unbiased_gram

    la, lb = ua.num_layers, ub.num_layers
    num, kk, ll = np.zeros((la, lb)), np.zeros(la), np.zeros(lb)
    buf_a: list[list[np.ndarray]] = [[] for _ in range(la)]
    buf_b: list[list[np.ndarray]] = [[] for _ in range(lb)]
    filled = 0

    def flush() -> None:
        nonlocal filled
        if filled < 4:
            return
        ka = [torch.from_numpy(np.concatenate(b)).double() for b in buf_a]
        kb = [torch.from_numpy(np.concatenate(b)).double() for b in buf_b]
        grams_a = [x @ x.T for x in ka]
        grams_b = [y @ y.T for y in kb]
        for i, k in enumerate(grams_a):
            kk[i] += float(hsic_unbiased_gram(k, k))
            for j, l in enumerate(grams_b):
                num[i, j] += float(hsic_unbiased_gram(k, l))
        for j, l in enumerate(grams_b):
            ll[j] += float(hsic_unbiased_gram(l, l))
        for b in buf_a + buf_b:
            b.clear()
        filled = 0

    for e in examples:
        xa, xb = fa.get(e.id), fb.get(e.id)
        ia, ib = _pair_indices(_frame_count(xa), ua.info.hop, ua.info.frame_offset, _frame_count(xb), ub.info.hop,
                               ub.info.frame_offset)
        for start in range(0, len(ia), batch):
            take = min(batch - filled, len(ia) - start)
            sel_a, sel_b = ia[start:start + take], ib[start:start + take]
            for i, x in enumerate(xa):
                x = x.numpy()
                buf_a[i].append(x[sel_a] if len(x) > 1 else np.repeat(x, len(sel_a), 0))
            for j, y in enumerate(xb):
                y = y.numpy()
                buf_b[j].append(y[sel_b] if len(y) > 1 else np.repeat(y, len(sel_b), 0))
            filled += take
            if filled >= batch:
                flush()
    flush()
    return num / np.sqrt(np.maximum(np.outer(kk, ll), 1e-300))


def _centres(n: int, hop: int, offset: int | None = None) -> np.ndarray:
    """Centre sample of each of n frames (frame j at j*hop + offset; offset defaults to hop/2)."""
    return np.arange(n) * hop + (hop // 2 if offset is None else offset)


def _frame_count(layers: list[np.ndarray]) -> int:
    frame_level = [len(l) for l in layers if len(l) > 1]
    return min(frame_level) if frame_level else 1


def _frames_of(x: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(x, n, 0) if len(x) == 1 else x[:n]


def property_samples(kind: str, upstream, utts: Utterances, frames: list[list[np.ndarray]], max_samples: int,
                     top_words: int, per_label: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(per-layer X [n, d], property Y [n, p], labels [n] for stratification)."""
    hop, offset = upstream.info.hop, upstream.info.frame_offset
    rng = np.random.default_rng(seed)
    n_layers = upstream.num_layers
    xs: list[list[np.ndarray]] = [[] for _ in range(n_layers)]
    ys, labels = [], []
    if kind == "mel":
        from harness.upstream import load_upstream

        fbank = load_upstream("fbank")
        from harness.audio import read_audio

        for e, layers in zip(utts.examples, frames):
            wav = torch.from_numpy(read_audio(e.path))
            mel = fbank.layers(wav[None], torch.tensor([len(wav)])).hidden[0][0].numpy()
            n = _frame_count(layers)
            idx = np.clip(np.round((_centres(n, hop, offset) - 200) / 160).astype(int), 0, len(mel) - 1)
            for l in range(n_layers):
                xs[l].append(_frames_of(layers[l], n))
            ys.append(mel[idx])
            labels += [0] * n
        x_all = [np.concatenate(x) for x in xs]
        y_all = np.concatenate(ys)
        lab = np.asarray(labels)
        if len(y_all) > max_samples:
            keep = np.sort(rng.choice(len(y_all), size=max_samples, replace=False))
            x_all, y_all, lab = [x[keep] for x in x_all], y_all[keep], lab[keep]
        return x_all, y_all, lab
    from harness.levels import frame_labels, spans, to_spans

    if kind == "position":  # frame-level categories: each frame's word position against its one-hot
        classes = ["B", "E", "I", "sil"]
        for e, layers in zip(utts.examples, frames):
            n = _frame_count(layers)
            words = to_spans(utts.words.get(e.id, []))
            grid = frame_labels(words, (n * hop + offset) / SAMPLE_RATE + 0.02)
            centre_frames = np.minimum((_centres(n, hop, offset) / SAMPLE_RATE / 0.01).astype(int), len(grid) - 1)
            for l in range(n_layers):
                xs[l].append(_frames_of(layers[l], n))
            lab = np.array([classes.index(grid[j]) for j in centre_frames])
            one = np.zeros((n, len(classes) - 1))
            one[lab < len(classes) - 1, lab[lab < len(classes) - 1]] = 1.0
            ys.append(one)
            labels += lab.tolist()
        x_all, y_all, lab = [np.concatenate(x) for x in xs], np.concatenate(ys), np.asarray(labels)
        if len(y_all) > max_samples:
            keep = np.sort(rng.choice(len(y_all), size=max_samples, replace=False))
            x_all, y_all, lab = [x[keep] for x in x_all], y_all[keep], lab[keep]
        return x_all, y_all, lab
    items = []  # (utt index, label, first frame, last frame)
    for u, (e, layers) in enumerate(zip(utts.examples, frames)):
        n = _frame_count(layers)
        centres = _centres(n, hop, offset)
        for seg in spans(kind, to_spans(utts.phones.get(e.id, [])), to_spans(utts.words.get(e.id, [])), e.id):
            s, t = seg.start * SAMPLE_RATE, seg.end * SAMPLE_RATE
            inside = np.nonzero((centres >= s) & (centres < t))[0]
            if len(inside) == 0:
                continue
            if kind == "phone" and len(inside) >= 3:
                k = len(inside)
                inside = inside[k // 3: k - k // 3]
            items.append((u, seg.label, int(inside[0]), int(inside[-1]) + 1))
    counts = Counter(label for _, label, _, _ in items)
    if kind in ("word", "syllable"):  # the most frequent ones, as the published word CCA does
        allowed = {w for w, _ in counts.most_common(top_words) if counts[w] >= 2}
        items = [it for it in items if it[1] in allowed]
    by_label = defaultdict(list)
    for it in items:
        by_label[it[1]].append(it)
    chosen = []
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))[:per_label]
        chosen += [group[i] for i in sorted(order)]
    classes = sorted(by_label)
    if len(classes) < 2:
        raise HarnessError(f"fewer than two {kind} labels in the alignments; cannot run CCA")
    index = {c: i for i, c in enumerate(classes)}
    for u, label, a, b in chosen:
        for l in range(n_layers):
            x = frames[u][l]
            xs[l].append(x[0] if len(x) == 1 else x[a:b].mean(0))  # utterance-level layers: the vector itself
        one = np.zeros(len(classes) - 1, dtype=np.float64)  # last class = all zeros
        if index[label] < len(classes) - 1:
            one[index[label]] = 1.0
        ys.append(one)
        labels.append(index[label])
    return [np.stack(x) for x in xs], np.stack(ys), np.asarray(labels)


@dataclass(frozen=True)
class CcaProtocol:
    """How a CCA score is measured (defaults: the published layer-wise protocol).

    Samples are split into ``folds`` label-stratified folds; each of ``trials`` trials takes
    a dev fold and a test fold (disjoint across trials) and fits on the rest, for every pair
    of epsilons (one per view) of the grid; the pair with the best dev score gives the
    trial's test score; the result is the mean over trials."""

    measure: str = "pwcca"  # pwcca | svcca | cca_mean
    convention: str = "reference"  # see harness.analysis.measures
    weights: str = "smaller"  # PWCCA weighting view: smaller (published), x (the layer) or y (the property)
    folds: int = 10
    trials: int = 3
    epsilons: tuple[float, ...] = (1e-11, 1e-9, 1e-7, 1e-5)
    keep: float = 0.99  # SVCCA: variance kept by each view's SVD

    def __post_init__(self) -> None:
        if self.measure not in CCA_MEASURES:
            raise HarnessError(f"unknown CCA measure {self.measure!r}; use {', '.join(CCA_MEASURES)}")
        if self.folds < 3:
            raise HarnessError("--folds must be at least 3 (one test, one dev and at least one training fold)")
        if 2 * self.trials > self.folds:
            raise HarnessError(f"--trials {self.trials} needs {2 * self.trials} folds (a dev and a test fold each); "
                               f"raise --folds or lower --trials")

    @property
    def pairs(self) -> list[tuple[float, float]]:
        """(epsilon of the layer, epsilon of the property): every pair for the reference
        convention (a separate epsilon per view), the diagonal for the relative one."""
        if self.convention == "reference":
            return [(a, b) for a in self.epsilons for b in self.epsilons]
        return [(e, e) for e in self.epsilons]


CCA_MEASURES = ("pwcca", "svcca", "cca_mean")
RELATIVE_EPSILONS = (0.0, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1)


def frame_phone_labels(upstream, utts: Utterances, frames: list[list[np.ndarray]], max_samples: int, seed: int,
                       ) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Frame-level phone identity: per layer ``[n, d]`` frames and the phone at each frame's
    centre (silence left out), subsampled to ``max_samples``; with the phone inventory."""
    hop, offset = upstream.info.hop, upstream.info.frame_offset
    xs: list[list[np.ndarray]] = [[] for _ in range(upstream.num_layers)]
    names: list[str] = []
    for e, layers in zip(utts.examples, frames):
        n = _frame_count(layers)
        centres = _centres(n, hop, offset) / SAMPLE_RATE
        segs = utts.phones.get(e.id, [])
        ends = np.array([s.start + s.duration for s in segs])
        idx = np.minimum(np.searchsorted(ends, centres, side="right"), len(segs) - 1)
        keep = np.array([segs[i].label != "sil" for i in idx], dtype=bool)
        for l in range(upstream.num_layers):
            xs[l].append(_frames_of(layers[l], n)[keep])
        names += [segs[i].label for i, k in zip(idx, keep) if k]
    inventory = sorted(set(names))
    labels = np.array([inventory.index(p) for p in names])
    x_all = [np.concatenate(x) for x in xs]
    if len(labels) > max_samples:
        pick = np.sort(np.random.default_rng(seed).choice(len(labels), size=max_samples, replace=False))
        x_all, labels = [x[pick] for x in x_all], labels[pick]
    return x_all, labels, inventory


def stratified_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id per sample, each label spread evenly over the folds."""
    fold = np.empty(len(labels), dtype=int)
    for lab in np.unique(labels):
        idx = np.nonzero(labels == lab)[0]
        idx = idx[rng.permutation(len(idx))]
        start = int(rng.integers(k))
        fold[idx] = (np.arange(len(idx)) + start) % k
    return fold


def _held_out_score(protocol: CcaProtocol, fit, x, y) -> float:
    if protocol.measure == "pwcca":
        return pwcca_score(fit, x, y, protocol.weights)
    u = (x - fit.mean_x) @ fit.wx
    v = (y - fit.mean_y) @ fit.wy
    return float(_column_correlations(u, v).mean())


def _column_correlations(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    u, v = u - u.mean(0), v - v.mean(0)
    den = torch.sqrt((u * u).sum(0) * (v * v).sum(0))
    return torch.where(den > 0, (u * v).sum(0) / den.clamp(min=1e-300), torch.zeros_like(den))


def cca_rows(upstream_name: str, checkpoint: str, layer_names: list[str], xs: list[np.ndarray], y: np.ndarray,
             labels: np.ndarray, prop: str, protocol: CcaProtocol, seed: int) -> list[dict]:
    """One row per (trial, layer, epsilon pair): dev and test score, or the error of a fit
    that failed (kept, never dropped)."""
    from harness.analysis.measures import CcaProblem, SvdReduction

    rows = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    y_all = torch.as_tensor(y, dtype=torch.float64, device=device)
    order = np.random.default_rng([seed, 99]).permutation(protocol.folds)
    for trial in range(protocol.trials):
        fold = stratified_folds(labels, protocol.folds, np.random.default_rng([seed, trial]))
        dev_f, test_f = int(order[2 * trial]), int(order[2 * trial + 1])
        masks = {name: torch.from_numpy(m).to(device) for name, m in
                 (("train", (fold != dev_f) & (fold != test_f)), ("dev", fold == dev_f), ("test", fold == test_f))}
        for l, x in enumerate(xs):
            x_all = torch.as_tensor(x, dtype=torch.float64, device=device)
            views = {name: (x_all[m], y_all[m]) for name, m in masks.items()}
            base = {"upstream": upstream_name, "checkpoint": checkpoint, "layer": l, "layer_name": layer_names[l],
                    "property": prop, "measure": protocol.measure, "trial": trial, "dev_fold": dev_f,
                    "test_fold": test_f}
            try:
                if protocol.measure == "svcca":  # each view reduced by an SVD fitted on the training fold
                    rx, ry = SvdReduction.fit(views["train"][0], protocol.keep), SvdReduction.fit(views["train"][1],
                                                                                                 protocol.keep)
                    views = {k: (rx(a), ry(b)) for k, (a, b) in views.items()}
                problem = CcaProblem(*views["train"], convention=protocol.convention)
            except SimilarityError as exc:
                rows += [{**base, "epsilon_x": ex, "epsilon_y": ey, "dev_score": float("nan"), "score": float("nan"),
                          "error": str(exc)} for ex, ey in protocol.pairs]
                continue
            for ex, ey in protocol.pairs:
                row = {**base, "epsilon_x": ex, "epsilon_y": ey}
                try:
                    fit = problem.fit(ex, ey)
                    dev = _held_out_score(protocol, fit, *views["dev"])
                    test = _held_out_score(protocol, fit, *views["test"])
                    rows.append({**row, "dev_score": dev, "score": test, "error": ""})
                except SimilarityError as exc:
                    rows.append({**row, "dev_score": float("nan"), "score": float("nan"), "error": str(exc)})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (checkpoint, layer, property): the test score at each trial's dev-chosen epsilon
    pair, mean and std over trials; the most chosen pair; how many fits failed."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["checkpoint"], r["layer"], r["property"], r["trial"])].append(r)
    per = defaultdict(list)
    failed = Counter()
    first_error: dict = {}
    for (ck, layer, prop, _), rs in groups.items():
        ok = [r for r in rs if not r["error"]]
        failed[(ck, layer, prop)] += len(rs) - len(ok)
        for r in rs:
            if r["error"]:
                first_error.setdefault((ck, layer, prop), f"epsilon {r['epsilon_x']}/{r['epsilon_y']}: {r['error']}")
        if ok:  # ties go to the larger epsilons (the more regularised fit)
            best = max(ok, key=lambda r: (r["dev_score"], r["epsilon_x"], r["epsilon_y"]))
            per[(ck, layer, prop)].append((best["score"], (best["epsilon_x"], best["epsilon_y"])))
    out = []
    for key in sorted(set(per) | set(failed)):
        vals = [v for v, _ in per.get(key, [])]
        eps = Counter(e for _, e in per.get(key, [])).most_common(1)
        out.append({"checkpoint": key[0], "layer": key[1], "property": key[2],
                    "mean": float(np.mean(vals)) if vals else float("nan"),
                    "std": float(np.std(vals)) if vals else float("nan"), "n": len(vals),
                    "epsilon": f"{eps[0][0][0]:g}/{eps[0][0][1]:g}" if eps else None, "failed_fits": failed[key],
                    "first_error": first_error.get(key, "")})
    return out


def to_csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def aligned_frames(a_frames: list[list[np.ndarray]], hop_a: int, b_frames: list[list[np.ndarray]], hop_b: int,
                   max_frames: int, seed: int, off_a: int = 0, off_b: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pair frames of two models by time: each frame of the coarser model with the finer
    model's frame nearest its centre. Returns per-layer [n, d] arrays, subsampled."""
    xa: list[list[np.ndarray]] = [[] for _ in a_frames[0]]
    xb: list[list[np.ndarray]] = [[] for _ in b_frames[0]]
    for la, lb in zip(a_frames, b_frames):
        na, nb = _frame_count(la), _frame_count(lb)
        ia, ib = _pair_indices(na, hop_a, off_a, nb, hop_b, off_b)
        ok = (ia < na) & (ib < nb)
        for l, x in enumerate(la):
            xa[l].append(x[ia[ok]] if len(x) > 1 else np.repeat(x, ok.sum(), 0))
        for l, x in enumerate(lb):
            xb[l].append(x[ib[ok]] if len(x) > 1 else np.repeat(x, ok.sum(), 0))
    a = [np.concatenate(x) for x in xa]
    b = [np.concatenate(x) for x in xb]
    n = len(a[0])
    if n > max_frames:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_frames, replace=False))
        a, b = [x[keep] for x in a], [x[keep] for x in b]
    return a, b


PAIR_PWCCA_EPSILON = 1e-9  # reference convention: epsilon x max|C| per view


def heldout_pwcca(x: np.ndarray, y: np.ndarray, seed: int = 0, epsilon: float = PAIR_PWCCA_EPSILON) -> float:
    """PWCCA of two representations of the same frames, fitted on a random half of the frames
    and scored on the other half (weights from the view with fewer neurons), so a wide layer
    cannot look similar by overfitting the canonical directions."""
    from harness.analysis.measures import CcaProblem, pwcca_score

    order = np.random.default_rng(seed).permutation(len(x))
    fit_idx, test_idx = order[: len(x) // 2], order[len(x) // 2:]
    fit = CcaProblem(x[fit_idx], y[fit_idx], "reference").fit(epsilon, epsilon)
    return pwcca_score(fit, x[test_idx], y[test_idx])


def cka_rows(name_a: str, names_a: list[str], a: list[np.ndarray], name_b: str, names_b: list[str],
             b: list[np.ndarray], with_pwcca: bool = False, seed: int = 0) -> list[dict]:
    rows = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            try:
                biased, unbiased, err = linear_cka(x, y), linear_cka(x, y, debiased=True), ""
            except SimilarityError as exc:
                biased, unbiased, err = float("nan"), float("nan"), str(exc)
            row = {"model_a": name_a, "layer_a": i, "layer_a_name": names_a[i], "model_b": name_b, "layer_b": j,
                   "layer_b_name": names_b[j], "cka": biased, "cka_debiased": unbiased}
            if with_pwcca:
                try:
                    row["pwcca_heldout"] = heldout_pwcca(x, y, seed)
                except SimilarityError as exc:
                    row["pwcca_heldout"], err = float("nan"), err or str(exc)
            rows.append({**row, "error": err})
    return rows


def plot_lines(summary: list[dict], title: str, path: Path, ylabel: str = "PWCCA (held-out folds)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    by = defaultdict(list)
    for r in summary:
        by[(r["checkpoint"], r["property"])].append(r)
    for (ck, prop), rs in sorted(by.items()):
        rs = sorted(rs, key=lambda r: r["layer"])
        xs = [r["layer"] for r in rs]
        m = np.array([r["mean"] for r in rs])
        s = np.array([r["std"] for r in rs])
        label = prop if len({k[0] for k in by}) == 1 else f"{Path(ck).name} {prop}"
        ax.plot(xs, m, marker="o", label=label)
        ax.fill_between(xs, m - s, m + s, alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def plot_heatmap(matrix: np.ndarray, xlabels: list[str], ylabels: list[str], title: str, path: Path,
                 xname: str, yname: str, vmin: float = 0.0, vmax: float = 1.0, annotate: bool = False) -> None:
    """``matrix [len(ylabels), len(xlabels)]`` as a PNG; ``annotate`` writes each value in its cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 0.45 * len(xlabels), 1.4 + 0.4 * len(ylabels)), dpi=100)
    im = ax.imshow(matrix, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    if annotate:
        middle = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > middle else "white")
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def run_cca(specs: list[str], prop: str, data_root: Path, split: str, out: Path, random_init: bool,
            protocol: CcaProtocol, max_samples: int, top_words: int, per_label: int, limit: int | None, seed: int,
            progress: bool = True) -> tuple[Path, list[dict]]:
    from harness.upstream import load_upstream

    utts = load_utterances(data_root, split, limit)
    rows = []
    for spec in specs:
        up = load_upstream(spec, random_init=random_init)
        frames = layer_frames(up, utts, progress)
        xs, y, labels = property_samples(prop, up, utts, frames, max_samples, top_words, per_label, seed)
        folds = protocol.folds
        n_train = len(y) * (folds - 2) // folds
        widest = max(max(x.shape[1] for x in xs), y.shape[1])
        if n_train <= widest:
            raise HarnessError(f"{len(y)} {prop} samples ({n_train} per training split) for up to {widest} dimensions: "
                               "CCA needs more samples than dimensions; use more utterances (--limit, --split) "
                               "or fewer property classes (--top-words)")
        k = min(min(x.shape[1] for x in xs), y.shape[1])
        if len(y) // folds <= k:
            raise HarnessError(f"{len(y)} {prop} samples give held-out folds of ~{len(y) // folds}, not more than the "
                               f"{k} canonical directions; use more utterances, fewer --folds or fewer --top-words")
        if progress:
            print(f"{spec}: {len(y)} {prop} samples, {y.shape[1]} property dims, {len(xs)} layers, "
                  f"{protocol.trials} trials x {len(protocol.pairs)} epsilon pairs", file=sys.stderr)
        rows += cca_rows(spec + (" (random init)" if random_init else ""), spec, up.info.layer_names, xs, y, labels,
                         prop, protocol, seed)
    out = Path(out)
    write_text(out, to_csv(rows))
    summary = summarise(rows)
    write_text(out.with_name(out.stem + ".summary.csv"), to_csv(summary))
    label = {"pwcca": "PWCCA", "svcca": "SVCCA", "cca_mean": "mean CCA"}[protocol.measure]
    plot_lines(summary, f"{label} with {prop}: {', '.join(specs) if len(specs) == 1 else f'{len(specs)} checkpoints'}",
               out.with_suffix(".png"), ylabel=f"{label} (held-out folds)")
    if len(specs) > 1:
        layers = sorted({r["layer"] for r in summary})
        grid = np.full((len(specs), len(layers)), np.nan)
        for r in summary:
            grid[specs.index(r["checkpoint"]), layers.index(r["layer"])] = r["mean"]
        plot_heatmap(grid, [str(l) for l in layers], [Path(s).name for s in specs], f"{label} with {prop}",
                     out.with_name(out.stem + ".grid.png"), "layer", "checkpoint")
    return out, summary


def run_cka(spec_a: str, spec_b: str | None, data_root: Path, split: str, out: Path, random_init: bool,
            max_frames: int, limit: int | None, seed: int, checkpoints: list[str] | None = None,
            progress: bool = True, minibatch: int = 0, with_pwcca: bool = False) -> Path:
    """Layer x layer CKA within one model or across two; with ``checkpoints``, every
    checkpoint's layer l against the last checkpoint's layer l (checkpoint x layer grid).

    ``minibatch`` > 0: Nguyen et al.'s mini-batch CKA over every frame (no ``max_frames``
    subsample), read from the cache one utterance at a time, batches of that many frames."""
    from harness.upstream import load_upstream

    utts = load_utterances(data_root, split, limit)
    out = Path(out)
    if checkpoints:
        final = load_upstream(checkpoints[-1])
        final_frames = layer_frames(final, utts, progress)
        rows, grid = [], []
        for ck in checkpoints:
            up = load_upstream(ck)
            a, b = aligned_frames(layer_frames(up, utts, progress), up.info.hop, final_frames,
                                  final.info.hop, max_frames, seed, up.info.frame_offset, final.info.frame_offset)
            line = []
            for l in range(min(len(a), len(b))):
                r = cka_rows(ck, up.info.layer_names, [a[l]], checkpoints[-1], final.info.layer_names, [b[l]])[0]
                r["layer_a"] = r["layer_b"] = l
                rows.append(r)
                line.append(r["cka"])
            grid.append(line)
        write_text(out, to_csv(rows))
        width = min(len(g) for g in grid)
        plot_heatmap(np.array([g[:width] for g in grid]), [str(i) for i in range(width)],
                     [Path(c).name for c in checkpoints], "CKA with the same layer of the last checkpoint",
                     out.with_suffix(".png"), "layer", "checkpoint")
        return out
    ua = load_upstream(spec_a, random_init=random_init)
    if minibatch:
        if with_pwcca:
            raise HarnessError("--pwcca needs the frames in memory: use it without --minibatch")
        if minibatch < 4:
            raise HarnessError("--minibatch needs at least 4 frames per batch")
        ub = ua if spec_b is None else load_upstream(spec_b)
        ca = cached_layers(ua, utts, progress)
        cb = ca if spec_b is None else cached_layers(ub, utts, progress)
        grid = minibatch_cka_grid(ua, ca, ub, cb, utts.examples, minibatch)
        rows = [{"model_a": spec_a, "layer_a": i, "layer_a_name": ua.info.layer_names[i], "model_b": spec_b or spec_a,
                 "layer_b": j, "layer_b_name": ub.info.layer_names[j], "cka_minibatch": float(grid[i, j]),
                 "batch": minibatch} for i in range(grid.shape[0]) for j in range(grid.shape[1])]
        write_text(out, to_csv(rows))
        plot_heatmap(grid.T, ua.info.layer_names, ub.info.layer_names, f"mini-batch linear CKA (batches of "
                     f"{minibatch} frames)", out.with_suffix(".png"), spec_a, spec_b or spec_a)
        return out
    fa = layer_frames(ua, utts, progress)
    if spec_b is None:
        ub, fb = ua, fa
    else:
        ub = load_upstream(spec_b)
        fb = layer_frames(ub, utts, progress)
    a, b = aligned_frames(fa, ua.info.hop, fb, ub.info.hop, max_frames, seed, ua.info.frame_offset,
                          ub.info.frame_offset)
    rows = cka_rows(spec_a, ua.info.layer_names, a, spec_b or spec_a, ub.info.layer_names, b, with_pwcca, seed)
    write_text(out, to_csv(rows))
    if with_pwcca:
        grid = np.array([[r["pwcca_heldout"] for r in rows if r["layer_a"] == i] for i in range(len(a))]).T
        plot_heatmap(grid, ua.info.layer_names, ub.info.layer_names, f"held-out PWCCA ({len(a[0])} frames)",
                     out.with_name(out.stem + ".pwcca.png"), spec_a, spec_b or spec_a)
    matrix = np.array([[r["cka"] for r in rows if r["layer_a"] == i] for i in range(len(a))]).T
    plot_heatmap(matrix, ua.info.layer_names, ub.info.layer_names,
                 f"linear CKA ({len(a[0])} frames)", out.with_suffix(".png"), spec_a, spec_b or spec_a)
    return out
