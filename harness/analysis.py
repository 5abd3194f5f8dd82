"""Layerwise analyses on the upstream interface: CCA with acoustic/phone/word properties,
CKA between layers of one or two models, and both across training checkpoints.

Protocol for CCA (after Pasad, Shi and Livescu's layer-wise analysis):
- ``mel``: 80-bin log-mel (Kaldi fbank, 10 ms) taken at each layer frame's centre time;
- ``phone``: one sample per phone segment (silence excluded): the layer's mean over the
  middle third of the segment's frames, paired with the phone's one-hot vector;
- ``word``: one sample per token of the most frequent words: the mean over the word's
  frames, paired with the word's one-hot vector.
One-hot properties drop their last column (the centred one-hot covariance is otherwise
singular by construction). Samples are split into label-stratified folds; for every
test fold the next fold is the dev fold and the rest train: CCA is fitted on train for
each epsilon of the grid, epsilon is chosen by the dev score, the test score is
reported, over several shuffling trials. Failed fits are rows with an error, never
dropped.
"""

from __future__ import annotations

import csv
import io
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .corpus.layout import ALIGNMENT_DIR, CorpusPaths
from .data import read_ctm, read_librispeech
from .data.librispeech import SPLITS as LIBRI_SPLITS
from .errors import HarnessError
from .fsutil import write_text
from .similarity import SimilarityError, cca_fit, linear_cka, pwcca_score
from .task import Example

EPSILONS = (0.0, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1)


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


def layer_frames(upstream, utts: Utterances, progress: bool = True) -> list[list[np.ndarray]]:
    """Per utterance, per layer ``[frames, dim]`` float32, through the feature cache."""
    from .features import ensure_features

    feats = ensure_features(upstream, "librispeech", utts.split, utts.examples, kind="frames", progress=progress)
    return [[t.numpy() for t in feats.get(e.id)] for e in utts.examples]


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
        from .upstream import load_upstream

        fbank = load_upstream("fbank")
        from .audio import read_audio

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
    segs_by_utt = utts.phones if kind == "phone" else utts.words
    items = []  # (utt index, label, first frame, last frame)
    for u, (e, layers) in enumerate(zip(utts.examples, frames)):
        n = _frame_count(layers)
        centres = _centres(n, hop, offset)
        for seg in segs_by_utt.get(e.id, []):
            if seg.label == "sil":
                continue
            s, t = seg.start * SAMPLE_RATE, (seg.start + seg.duration) * SAMPLE_RATE
            inside = np.nonzero((centres >= s) & (centres < t))[0]
            if len(inside) == 0:
                continue
            if kind == "phone" and len(inside) >= 3:
                k = len(inside)
                inside = inside[k // 3: k - k // 3]
            items.append((u, seg.label, int(inside[0]), int(inside[-1]) + 1))
    counts = Counter(label for _, label, _, _ in items)
    if kind == "word":
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


def stratified_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id per sample, each label spread evenly over the folds."""
    fold = np.empty(len(labels), dtype=int)
    for lab in np.unique(labels):
        idx = np.nonzero(labels == lab)[0]
        idx = idx[rng.permutation(len(idx))]
        start = int(rng.integers(k))
        fold[idx] = (np.arange(len(idx)) + start) % k
    return fold


def cca_rows(upstream_name: str, checkpoint: str, layer_names: list[str], xs: list[np.ndarray], y: np.ndarray,
             labels: np.ndarray, prop: str, folds: int, trials: int, seed: int,
             epsilons: Sequence[float] = EPSILONS) -> list[dict]:
    rows = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    y_t = torch.as_tensor(y, dtype=torch.float64, device=device)
    for trial in range(trials):
        fold = stratified_folds(labels, folds, np.random.default_rng([seed, trial]))
        for f in range(folds):
            dev_f = (f + 1) % folds
            tr, dv, te = fold != f, fold == dev_f, fold == f
            tr &= ~dv
            for l, x in enumerate(xs):
                x_t = torch.as_tensor(x, dtype=torch.float64, device=device)
                for eps in epsilons:
                    base = {"upstream": upstream_name, "checkpoint": checkpoint, "layer": l, "layer_name": layer_names[l],
                            "property": prop, "trial": trial, "fold": f, "epsilon": eps}
                    try:
                        fit = cca_fit(x_t[torch.from_numpy(tr)], y_t[torch.from_numpy(tr)], eps)
                        dev = pwcca_score(fit, x_t[torch.from_numpy(dv)], y_t[torch.from_numpy(dv)])
                        test = pwcca_score(fit, x_t[torch.from_numpy(te)], y_t[torch.from_numpy(te)])
                        rows.append({**base, "dev_score": dev, "score": test, "error": ""})
                    except SimilarityError as exc:
                        rows.append({**base, "dev_score": float("nan"), "score": float("nan"), "error": str(exc)})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (checkpoint, layer, property): test score at the dev-chosen epsilon, mean and std
    over trials x folds; also how many fits failed."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["checkpoint"], r["layer"], r["property"], r["trial"], r["fold"])].append(r)
    per = defaultdict(list)
    failed = Counter()
    first_error: dict = {}
    for (ck, layer, prop, _, _), rs in groups.items():
        ok = [r for r in rs if not r["error"]]
        failed[(ck, layer, prop)] += len(rs) - len(ok)
        for r in rs:
            if r["error"]:
                first_error.setdefault((ck, layer, prop), f"epsilon {r['epsilon']}: {r['error']}")
        if ok:
            best = max(ok, key=lambda r: (r["dev_score"], -r["epsilon"]))
            per[(ck, layer, prop)].append((best["score"], best["epsilon"]))
    out = []
    for key in sorted(set(per) | set(failed)):
        vals = [v for v, _ in per.get(key, [])]
        eps = Counter(e for _, e in per.get(key, [])).most_common(1)
        out.append({"checkpoint": key[0], "layer": key[1], "property": key[2],
                    "mean": float(np.mean(vals)) if vals else float("nan"),
                    "std": float(np.std(vals)) if vals else float("nan"), "n": len(vals),
                    "epsilon": eps[0][0] if eps else None, "failed_fits": failed[key],
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
        if hop_a >= hop_b:
            ia = np.arange(na)
            ib = np.clip(np.round((_centres(na, hop_a, off_a) - off_b) / hop_b).astype(int), 0, nb - 1)
        else:
            ib = np.arange(nb)
            ia = np.clip(np.round((_centres(nb, hop_b, off_b) - off_a) / hop_a).astype(int), 0, na - 1)
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


def cka_rows(name_a: str, names_a: list[str], a: list[np.ndarray], name_b: str, names_b: list[str],
             b: list[np.ndarray]) -> list[dict]:
    rows = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            try:
                biased, unbiased, err = linear_cka(x, y), linear_cka(x, y, debiased=True), ""
            except SimilarityError as exc:
                biased, unbiased, err = float("nan"), float("nan"), str(exc)
            rows.append({"model_a": name_a, "layer_a": i, "layer_a_name": names_a[i], "model_b": name_b, "layer_b": j,
                         "layer_b_name": names_b[j], "cka": biased, "cka_debiased": unbiased, "error": err})
    return rows


def plot_lines(summary: list[dict], title: str, path: Path) -> None:
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
    ax.set_ylabel("PWCCA (held-out folds)")
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


def run_cca(specs: list[str], prop: str, data_root: Path, split: str, out: Path, random_init: bool, folds: int,
            trials: int, max_samples: int, top_words: int, per_label: int, limit: int | None, seed: int,
            progress: bool = True) -> tuple[Path, list[dict]]:
    from .upstream import load_upstream

    if folds < 3:
        raise HarnessError("--folds must be at least 3 (one test, one dev and at least one training fold)")
    utts = load_utterances(data_root, split, limit)
    rows = []
    for spec in specs:
        up = load_upstream(spec, random_init=random_init)
        frames = layer_frames(up, utts, progress)
        xs, y, labels = property_samples(prop, up, utts, frames, max_samples, top_words, per_label, seed)
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
            print(f"{spec}: {len(y)} {prop} samples, {y.shape[1]} property dims, {len(xs)} layers", file=sys.stderr)
        rows += cca_rows(spec + (" (random init)" if random_init else ""), spec, up.info.layer_names, xs, y, labels,
                         prop, folds, trials, seed)
    out = Path(out)
    write_text(out, to_csv(rows))
    summary = summarise(rows)
    write_text(out.with_name(out.stem + ".summary.csv"), to_csv(summary))
    plot_lines(summary, f"CCA with {prop}: {', '.join(specs) if len(specs) == 1 else f'{len(specs)} checkpoints'}",
               out.with_suffix(".png"))
    if len(specs) > 1:
        layers = sorted({r["layer"] for r in summary})
        grid = np.full((len(specs), len(layers)), np.nan)
        for r in summary:
            grid[specs.index(r["checkpoint"]), layers.index(r["layer"])] = r["mean"]
        plot_heatmap(grid, [str(l) for l in layers], [Path(s).name for s in specs], f"CCA with {prop}",
                     out.with_name(out.stem + ".grid.png"), "layer", "checkpoint")
    return out, summary


def run_cka(spec_a: str, spec_b: str | None, data_root: Path, split: str, out: Path, random_init: bool,
            max_frames: int, limit: int | None, seed: int, checkpoints: list[str] | None = None,
            progress: bool = True) -> Path:
    """Layer x layer CKA within one model or across two; with ``checkpoints``, every
    checkpoint's layer l against the last checkpoint's layer l (checkpoint x layer grid)."""
    from .upstream import load_upstream

    utts = load_utterances(data_root, split, limit)
    out = Path(out)
    if checkpoints:
        final = load_upstream(checkpoints[-1])
        final_frames = layer_frames(final, utts, progress)
        rows, grid = [], []
        for ck in checkpoints:
            up = load_upstream(ck)
            a, b = aligned_frames(layer_frames(up, utts, progress), up.info.hop or 160, final_frames,
                                  final.info.hop or 160, max_frames, seed, up.info.frame_offset, final.info.frame_offset)
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
    fa = layer_frames(ua, utts, progress)
    if spec_b is None:
        ub, fb = ua, fa
    else:
        ub = load_upstream(spec_b)
        fb = layer_frames(ub, utts, progress)
    a, b = aligned_frames(fa, ua.info.hop or 160, fb, ub.info.hop or 160, max_frames, seed, ua.info.frame_offset,
                          ub.info.frame_offset)
    rows = cka_rows(spec_a, ua.info.layer_names, a, spec_b or spec_a, ub.info.layer_names, b)
    write_text(out, to_csv(rows))
    matrix = np.array([[r["cka"] for r in rows if r["layer_a"] == i] for i in range(len(a))]).T
    plot_heatmap(matrix, ua.info.layer_names, ub.info.layer_names,
                 f"linear CKA ({len(a[0])} frames)", out.with_suffix(".png"), spec_a, spec_b or spec_a)
    return out
