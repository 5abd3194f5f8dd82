"""The speech-vs-speaker study as one page: which model and layer serves which task, what the
learned weighted sums use, and how the models' layers relate (CKA).

A benchmark config with a ``study`` section builds it after its runs (``harness benchmark
benchmarks/study.yaml``)::

    study:
      out: results/study
      title: Speech vs speaker models
      groups: {content: [pr, ks, ic], speaker: [sid, asv], paralinguistic: [er]}
      cka: [[tiny_hubert_it1, tiny_dino], [tiny_hubert_it1, ge2e]]

The page (``STUDY.md`` and a self-contained ``index.html``) holds: the best layer and test
score with its 95% interval for every upstream and task, grouped; the learned weighted-sum
weights per task for each upstream (a heatmap); the CKA of every layer of one model with every
layer of another (frames paired by time). It states numbers; what they show is written in
the README from them.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.errors import HarnessError
from harness.reports.figures import save_png


@dataclass
class StudySpec:
    """A study page's spec (benchmark config's ``study`` key): output folder, title, task groups, CKA pairs."""
    out: Path
    title: str = "Speech vs speaker models"
    groups: dict[str, list[str]] = field(default_factory=dict)
    cka: list[tuple[str, str]] = field(default_factory=list)
    split: str = "dev"
    cka_frames: int = 20000

    @classmethod
    def from_config(cls, body: dict, where: str) -> "StudySpec":
        """Read the ``study`` mapping of a benchmark config; HarnessError naming a bad key."""
        if not isinstance(body, dict) or "out" not in body or "groups" not in body:
            raise HarnessError(f"{where}: study needs 'out' and 'groups' (name -> list of tasks)")
        unknown = set(body) - {"out", "title", "groups", "cka", "split", "cka_frames"}
        if unknown:
            raise HarnessError(f"{where}: unknown study key(s) {sorted(unknown)}")
        pairs = [tuple(p) for p in body.get("cka", [])]
        if any(len(p) != 2 for p in pairs):
            raise HarnessError(f"{where}: study cka takes pairs [speech_model, speaker_model]")
        return cls(Path(body["out"]), str(body.get("title", cls.title)), {k: list(v) for k, v in body["groups"].items()},
                   pairs, str(body.get("split", "dev")), int(body.get("cka_frames", 20000)))


def _weights_figure(rankings, path: Path) -> Path | None:
    """One row per (upstream, task): the softmax weights of its weighted-sum probe over layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_upstream: dict[str, list] = {}
    for r in rankings:
        w = next((s for s in r.weighted if s.weights), None)
        if w is not None:
            by_upstream.setdefault(r.label, []).append((r.task, w.weights, r.upstream.layer_names))
    if not by_upstream:
        return None
    fig, axes = plt.subplots(1, len(by_upstream), figsize=(3.6 * len(by_upstream), 2.6), dpi=100, squeeze=False)
    for ax, (label, rows) in zip(axes[0], sorted(by_upstream.items())):
        rows = sorted(rows)
        width = max(len(w) for _, w, _ in rows)
        m = np.full((len(rows), width), np.nan)
        for i, (_, w, _) in enumerate(rows):
            m[i, : len(w)] = w
        im = ax.imshow(m, aspect="auto", cmap="magma", vmin=0, vmax=np.nanmax(m))
        ax.set_yticks(range(len(rows)), [t for t, _, _ in rows], fontsize=7)
        ax.set_xticks(range(width), range(width), fontsize=7)
        ax.set_xlabel("weighted-sum input (layer order)", fontsize=7)
        ax.set_title(label, fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path


def build(spec: StudySpec, results: Path, data_root: Path | None = None, progress: bool = True,
          labels: set[str] | None = None, records: Sequence[Path] | None = None) -> Path:
    """Write the study page from the records under ``results`` (and CKA runs); return STUDY.md.
    ``labels``: the upstreams of the study (``NAME`` or ``NAME (random init)``); other records
    under ``results`` (checkpoint series, other benchmarks) stay off the page. ``records``: the
    record files of the study's own runs (``harness benchmark`` passes them): only those are
    ranked, so another setting of the same upstream and task under ``results`` (a learning-rate
    grid, another step budget) never takes a cell. Raises HarnessError when a cell would have
    two settings to choose from."""
    from harness.analysis.analyses import Cka
    from harness.analysis.options import CkaOptions
    from harness.analysis.runner import run_analysis
    from harness.corpus.layout import require_embedded_corpus
    from harness.fsutil import write_text
    from harness.reports.ranking import Record, load_records
    from harness.reports.stored import rank_stored

    found = [Record.read(p) for p in records] if records is not None else load_records(results)
    rankings = [r for r in rank_stored(found) if r.layers]
    tasks = [t for group in spec.groups.values() for t in group]
    rankings = [r for r in rankings if r.task in tasks and (labels is None or r.label in labels)]
    cells: dict[tuple[str, str], list] = {}
    for r in rankings:
        cells.setdefault((r.label, r.task), []).append(r.setting)
    doubled = next(((k, v) for k, v in cells.items() if len(v) > 1), None)
    if doubled:
        (label, task), settings = doubled
        raise HarnessError(f"study: {label} has {len(settings)} settings of {task} ({', '.join(settings)}); "
                           "build the study from its benchmark's own runs")
    out = Path(spec.out)
    md = [f"# {spec.title}", "", "Generated by `harness benchmark` from the result records: the best single layer "
          "(chosen on dev where the records kept dev outcomes, else on test), its test score and 95% bootstrap "
          "interval (test utterances; for asv the utterances behind the trials).", ""]
    for group, group_tasks in spec.groups.items():
        present = [t for t in group_tasks if any(r.task == t for r in rankings)]
        if not present:
            continue
        md += [f"## {group}", "", "| upstream | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
        for label in sorted({r.label for r in rankings}):
            cells = []
            for t in present:
                r = next((x for x in rankings if x.label == label and x.task == t), None)
                if r is None:
                    cells.append("-")
                    continue
                b = r.best
                arrow = "" if r.higher_is_better else " (lower better)"
                cells.append(f"{b.score:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}] L{b.layer} {r.metric}{arrow}")
            md.append(f"| {label} | " + " | ".join(cells) + " |")
        md.append("")
    weights = _weights_figure(rankings, out / "weights.png")
    if weights:
        md += ["## Learned weighted-sum weights", "", "![weights](weights.png)", ""]
    cka_paths = []
    if spec.cka:
        root = data_root or require_embedded_corpus()
        md += ["## CKA between models (frames paired by time)", ""]
        for a, b in spec.cka:
            name = f"cka__{a}__{b}".replace("/", "_").replace(":", "_")
            path = run_analysis(Cka, CkaOptions(upstream=a, against=b, data_root=root, split=spec.split,
                                                out=out / f"{name}.csv", max_samples=spec.cka_frames,
                                                quiet=not progress)).written
            cka_paths.append(path.with_suffix(".png"))
            md += [f"![{a} vs {b}]({name}.png)", ""]
    path = out / "STUDY.md"
    write_text(path, "\n".join(md) + "\n")
    _html(md, [weights] + cka_paths, out / "index.html")
    return path


def _html(md: list[str], images: list[Path | None], path: Path) -> None:
    """A self-contained page: the Markdown tables as HTML tables, figures inlined."""
    from harness.fsutil import write_text

    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>study</title><style>"
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;font-size:.85em}img{max-width:100%}</style></head><body>"]
    in_table = False
    for line in md:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                parts.append("<table>")
                in_table = True
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            parts.append("</table>")
            in_table = False
        if line.startswith("# "):
            parts.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            parts.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            name = line[line.index("(") + 1:-1]
            img = next((p for p in images if p is not None and p.name == name), None)
            if img is not None and img.exists():
                data = base64.b64encode(img.read_bytes()).decode()
                parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
        elif line:
            parts.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        parts.append("</table>")
    parts.append("</body></html>")
    write_text(path, "\n".join(parts))
