"""Regenerate the leaderboard (Markdown, CSV, static HTML) from result records alone.

Deterministic: the same records give byte-identical files (sorted inputs, fixed number
formats, PNGs without timestamps). One table per measurement setting (task, corpus,
task config, harness version): numbers measured differently never share a column.
The HTML has its CSS and JS inline and shows the plots from ``plots/`` beside it (relative
links): it works from ``file://`` with no network. (It embedded every plot as a data URI
before, which repeated each PNG a third larger inside the page.)

Regeneration is incremental: ``plots/index.json`` keeps, per plot, a hash of what it is drawn
from (the ranking, the drawing code, the Matplotlib and Pillow versions) and of the PNG
written; a plot is redrawn only when that hash changed or the file is missing or altered, so
files are the same as a full rebuild's. Text files are rewritten only when their content
changes.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import inspect
import io
import json
from collections import defaultdict
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from harness.fsutil import sha256_file, write_json, write_text
from harness.reports import figures
from harness.reports.ranking import Ranking, figure, load_records, plot, plot_name
from harness.reports.stored import rank_stored

PLOT_INDEX = "index.json"  # in plots/: what each plot was drawn from
_INDEX_FORMAT = 1


def _score(r: Ranking, which: str) -> tuple[str, str]:
    if which == "best":
        b = r.best
        return f"{b.score:.4f}", f"[{b.ci_low:.4f}, {b.ci_high:.4f}]"
    w = next((s for s in r.weighted if s.probe == "weighted"), r.weighted[0] if r.weighted else None)
    return (f"{w.score:.4f}", f"[{w.ci_low:.4f}, {w.ci_high:.4f}]") if w else ("-", "")


def _settings(rankings: Sequence[Ranking]) -> dict[tuple[str, str], list[Ranking]]:
    groups: dict[tuple[str, str], list[Ranking]] = defaultdict(list)
    for r in rankings:
        if r.layers:
            groups[(r.task, r.setting)].append(r)
    sign = {k: (1 if v[0].higher_is_better else -1) for k, v in groups.items()}
    return {k: sorted(v, key=lambda r: (-sign[k] * r.best.score, r.label)) for k, v in sorted(groups.items())}


def _describe(r: Ranking) -> str:
    info = r.setting_info
    corpus = info.get("corpus") or {}
    content = str(corpus.get("content_sha256") or corpus.get("manifest_sha256"))[:12]
    if corpus.get("kind") == "harness-embedded":
        where = f"embedded corpus ({corpus.get('profile')}, seed {corpus.get('seed')}, data {content})"
    elif corpus.get("kind") == "external":
        where = f"external corpus ({corpus.get('examples', '?')} utterances, data {content})"
    else:
        where = f"corpus at {corpus.get('root', '?')}"
    cfg = info.get("config", {})
    lr = (f"lr chosen per layer on dev from {', '.join(f'{x:g}' for x in cfg['lr_grid'])}" if cfg.get("lr_grid")
          else f"lr {cfg.get('lr')}")
    seeds = (f"; seeds share the batches of seed {info['batch_seed']} (head initialisation only)"
             if info.get("batch_seed") is not None else "")
    return (f"{where}; {info.get('steps')} steps, {lr}, batch {cfg.get('batch_size')}{seeds}; "
            f"harness {info.get('harness')}")


def _choice(rs: Sequence[Ranking]) -> str:
    """How a table's best layers were chosen and what its intervals resample."""
    on = sorted({r.chosen_on for r in rs})
    how = ("best and ~best chosen on dev, test reported" if on == ["dev"] else
           "best and ~best chosen on test (records from before dev outcomes were kept)" if on == ["test"] else
           "best and ~best chosen on dev where the records kept dev outcomes, else on test (dev column)")
    r0 = rs[0]
    unit = f"{r0.units} {r0.unit}s" if r0.clustered else f"{r0.test_utterances} test {r0.unit}s"
    return f"{how}; intervals resample {unit}"


def _dev(r: Ranking) -> str:
    return f"{r.best.dev:.4f}" if r.chosen_on == "dev" and r.best.dev is not None else "-"


@lru_cache(maxsize=1)
def _drawing() -> str:
    """The code and library versions that draw a plot: a change to either redraws every plot."""
    try:
        code = inspect.getsource(figure) + inspect.getsource(plot) + inspect.getsource(figures)
    except (OSError, TypeError):  # no source shipped: fall back to the package version
        code = metadata.version("harness")
    versions = [metadata.version(name) for name in ("matplotlib", "pillow")]
    return hashlib.sha256(json.dumps([code, versions]).encode()).hexdigest()


def plot_key(r: Ranking) -> str:
    """A hash of everything :func:`plot` draws ``r`` from (every field of the ranking, exact)."""
    data = json.dumps([dataclasses.asdict(r), _drawing()], sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def _read_index(folder: Path) -> dict[str, dict]:
    try:
        data = json.loads((folder / PLOT_INDEX).read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("format") == _INDEX_FORMAT and isinstance(data.get("plots"), dict)
    return data["plots"] if ok else {}


def draw_plots(rankings: Sequence[Ranking], folder: Path) -> tuple[dict[tuple, Path], list[Path]]:
    """The layer-curve plot of every ranking with single layers, under ``folder``; only those
    whose inputs changed (or whose file is missing or altered) are drawn. Returns the plot of
    each (label, task, setting) and the plots drawn. Plots of rankings that are gone (e.g. a
    retrained checkpoint series) would linger and mislead, so they are removed; only files
    named like ours (``TASK__UPSTREAM__SETTING.png``) are."""
    folder = Path(folder)
    index, fresh = _read_index(folder), {}
    plots, drawn = {}, []
    for r in rankings:
        if not r.layers:
            continue
        path, key = folder / plot_name(r), plot_key(r)
        entry = index.get(path.name) or {}
        digest = sha256_file(path) if entry.get("inputs") == key and path.is_file() else None
        if digest is None or digest != entry.get("png"):
            plot(r, path)
            drawn.append(path)
            digest = sha256_file(path)
        plots[(r.label, r.task, r.setting)] = path
        fresh[path.name] = {"inputs": key, "png": digest}
    for stale in set(folder.glob("*__*__*.png")) - set(plots.values()):
        stale.unlink()
    if fresh != index or not (folder / PLOT_INDEX).is_file():
        if fresh:
            write_json(folder / PLOT_INDEX, {"format": _INDEX_FORMAT, "plots": fresh})
        else:
            (folder / PLOT_INDEX).unlink(missing_ok=True)
    return plots, drawn


def _write_if_changed(path: Path, text: str) -> None:
    """Leave a file that already holds ``text`` untouched (its time stamp says when it changed)."""
    try:
        if path.read_bytes() == text.encode("utf-8"):
            return
    except OSError:
        pass
    write_text(path, text)


def build(results: Path, out: Path) -> list[Path]:
    """Write LEADERBOARD.md, leaderboard.csv, index.html and plots/ under ``out`` (plots only
    where their ranking changed, see :func:`draw_plots`); return those paths, plots last."""
    rankings = rank_stored(load_records(results))  # unchanged groups are read back, not re-bootstrapped
    groups = _settings(rankings)
    out = Path(out)
    plots, _ = draw_plots(rankings, out / "plots")

    # Markdown
    study = out / "study" / "STUDY.md"
    md = ["# Leaderboard", "",
          "Generated by `harness leaderboard` from the result records; do not edit by hand.",
          *(["See also the [speech vs speaker models study](study/STUDY.md)."] if study.exists() else []),
          "Best layer = the best single layer on dev where the records kept per-utterance dev outcomes, "
          "else on test (each table says which); `~best` = layers not significantly worse on that split "
          "(paired bootstrap, 95%). Scores and CIs (95% bootstrap) are on test.", ""]
    for (task, setting), rs in groups.items():
        r0 = rs[0]
        arrow = "higher is better" if r0.higher_is_better else "lower is better"
        md += [f"## {task} · test {r0.metric} ({arrow}) · setting {setting}", "", f"Measured on: {_describe(r0)}.",
               f"Layer choice: {_choice(rs)}.", "",
               "| upstream | layers | best layer | best dev | best score | 95% CI | ~best layers | weighted sum "
               "| 95% CI |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            b = r.best
            near = ",".join(str(s.layer) for s in r.layers if s.not_worse)
            ws, wci = _score(r, "weighted")
            md.append(f"| {r.label} | {len(r.layers)} | {b.layer} ({b.name}) | {_dev(r)} | {b.score:.4f} | "
                      f"[{b.ci_low:.4f}, {b.ci_high:.4f}] | {near} | {ws} | {wci} |")
        md += [""] + [f"![{r.label} {task}](plots/{plot_name(r)})" for r in rs] + [""]
    paths = [out / "LEADERBOARD.md", out / "leaderboard.csv", out / "index.html"]
    _write_if_changed(paths[0], "\n".join(md))

    # CSV
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "setting", "metric", "higher_is_better", "upstream", "layers", "best_layer", "best_layer_name",
                "best_score", "best_ci_low", "best_ci_high", "not_significantly_worse", "weighted_score", "chosen_on",
                "best_dev"])
    for (task, setting), rs in groups.items():
        for r in rs:
            b = r.best
            w.writerow([task, setting, r.metric, r.higher_is_better, r.label, len(r.layers), b.layer, b.name,
                        f"{b.score:.6f}", f"{b.ci_low:.6f}", f"{b.ci_high:.6f}",
                        " ".join(str(s.layer) for s in r.layers if s.not_worse), _score(r, "weighted")[0],
                        r.chosen_on, _dev(r) if _dev(r) != "-" else ""])
    _write_if_changed(paths[1], buf.getvalue())

    # HTML
    def img(p: Path) -> str:
        return html.escape(f"plots/{quote(p.name)}")

    parts = [_HTML_HEAD]
    for (task, setting), rs in groups.items():
        r0 = rs[0]
        arrow = "higher is better" if r0.higher_is_better else "lower is better"
        parts.append(f'<section><h2>{html.escape(task)} <small>test {html.escape(r0.metric)} ({arrow}) · '
                     f'setting {setting}</small></h2><p class="what">Measured on: {html.escape(_describe(r0))}.<br>'
                     f'Layer choice: {html.escape(_choice(rs))}.</p>')
        parts.append('<table class="sortable"><thead><tr>' + "".join(
            f"<th>{h}</th>" for h in ("upstream", "layers", "best layer", "best dev", "best score", "95% CI",
                                      "~best layers", "weighted sum")) + "</tr></thead><tbody>")
        for r in rs:
            b = r.best
            near = ",".join(str(s.layer) for s in r.layers if s.not_worse)
            ws, _ = _score(r, "weighted")
            parts.append(f"<tr><td>{html.escape(r.label)}</td><td>{len(r.layers)}</td>"
                         f"<td data-v=\"{b.layer}\">{b.layer} ({html.escape(b.name)})</td><td>{_dev(r)}</td>"
                         f"<td>{b.score:.4f}</td>"
                         f"<td>[{b.ci_low:.4f}, {b.ci_high:.4f}]</td><td>{near}</td><td>{ws}</td></tr>")
        parts.append("</tbody></table><div class=\"plots\">")
        for r in rs:
            p = plots[(r.label, r.task, r.setting)]
            parts.append(f'<figure><img alt="{html.escape(r.label)} {task} layer curve" src="{img(p)}">'
                         f"<figcaption>{html.escape(r.label)}</figcaption></figure>")
        parts.append("</div></section>")
    parts.append(_HTML_TAIL)
    _write_if_changed(paths[2], "".join(parts))
    return paths + sorted(plots.values())


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>harness leaderboard</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#111;max-width:1200px}
h1{margin-bottom:0}h2 small{font-weight:normal;color:#555;font-size:.7em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#eef2f7;cursor:pointer;user-select:none}th:after{content:" \\2195";color:#999}
tr:nth-child(even){background:#fafafa}.what{color:#444;font-size:.9em}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{max-width:880px;border:1px solid #ddd}
</style></head><body><h1>harness leaderboard</h1>
<p>Generated from result records by <code>harness leaderboard</code>. Best layer = best single layer on dev where
the records kept dev outcomes, else on test (each table says which); ~best = layers not significantly worse on that
split (paired bootstrap, 95%); scores and intervals are on test. Click a header to sort.</p>
"""

_HTML_TAIL = """<script>
document.querySelectorAll("table.sortable th").forEach(function(th, col){
  th.addEventListener("click", function(){
    var body = th.closest("table").tBodies[0];
    var dir = th.dataset.dir === "asc" ? -1 : 1; th.dataset.dir = dir === 1 ? "asc" : "desc";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
      return dir * x.localeCompare(y);
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
</script></body></html>
"""
