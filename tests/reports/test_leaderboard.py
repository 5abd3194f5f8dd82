"""Leaderboard regeneration: incremental plots, identical files, and plots that show their layers."""

from __future__ import annotations

import io
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.records import (
    MetricSpec,
    Outcomes,
    ResultRecord,
    UpstreamRef,
    write_record,
)
from harness.reports import leaderboard
from harness.reports.figures import compact_png
from harness.reports.leaderboard import PLOT_INDEX, build
from harness.reports.ranking import figure, load_records, plot, rank


def probe(root: Path, upstream: str, layer, p: float, n: int = 120, seed: int = 0, layers=None, weights=None):
    """A record and its outcomes (accuracy p on n utterances) as the engine writes them."""
    rng = np.random.default_rng(zlib.crc32(f"{upstream} {layer} {p}".encode()))
    correct = (rng.random(n) < p).astype(int).tolist()
    name = f"layer_{layer}" if isinstance(layer, int) else layer
    rec = ResultRecord(UpstreamRef(upstream, "hf", "@x", None, False, None, tuple(f"l{i}" for i in range(12))),
                       "ic", MetricSpec("accuracy", True), name, layer,
                       layers if layers is not None else [layer] if isinstance(layer, int) else [],
                       weights, {"accuracy": 0.5}, {"accuracy": sum(correct) / n}, 10, 20, seed, {"lr": 0.1},
                       {"kind": "external", "root": "/x"}, "k", n, {"harness": "0.1.0"})
    return write_record(root, rec, Outcomes.accuracy([f"u{i}" for i in range(n)], correct))


@pytest.fixture()
def results(tmp_path):
    root = tmp_path / "results"
    for layer, p in enumerate([0.3, 0.6, 0.8]):
        probe(root, "modelA", layer, p)
        probe(root, "modelB", layer, 1 - p)
    probe(root, "modelA", "weighted", 0.7, layers=[0, 1, 2], weights=[0.2, 0.3, 0.5])
    return root


@pytest.fixture()
def drawn(monkeypatch):
    """The plots drawn during a test, in order."""
    calls: list[str] = []

    def counting(r, path):
        calls.append(Path(path).name)
        return plot(r, path)

    monkeypatch.setattr(leaderboard, "plot", counting)
    return calls


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_ino) for p in folder.rglob("*") if p.is_file()}


def test_a_second_build_redraws_nothing_and_rewrites_nothing(results, tmp_path, drawn):
    out = tmp_path / "board"
    build(results, out)
    assert len(drawn) == 2 and (out / "plots" / PLOT_INDEX).is_file()
    first = _files(out)
    drawn.clear()
    build(results, out)
    assert drawn == [] and _files(out) == first  # same bytes, same files (no rename over them)


def test_a_changed_record_redraws_exactly_its_plot(results, tmp_path, drawn):
    out = tmp_path / "board"
    build(results, out)
    before = _files(out)
    probe(results, "modelB", 1, 0.9)  # a new measurement of one layer of modelB
    drawn.clear()
    build(results, out)
    assert len(drawn) == 1 and drawn[0].startswith("ic__modelB__")
    after = _files(out)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {f"plots/{drawn[0]}", f"plots/{PLOT_INDEX}", "LEADERBOARD.md", "leaderboard.csv", "index.html"}
    # and the incremental result is what a build from scratch writes
    fresh = tmp_path / "fresh"
    build(results, fresh)
    assert {k: v[0] for k, v in _files(fresh).items()} == {k: v[0] for k, v in after.items()}


def test_a_plot_altered_or_lost_on_disk_is_redrawn(results, tmp_path, drawn):
    out = tmp_path / "board"
    build(results, out)
    a, b = sorted((out / "plots").glob("*.png"))
    a.write_bytes(b"edited by hand")
    b.unlink()
    drawn.clear()
    build(results, out)
    assert sorted(drawn) == sorted([a.name, b.name]) and Image.open(a).size[0] > 100
    (out / "plots" / PLOT_INDEX).write_text("{not json")  # a broken index: everything is redrawn, nothing fails
    drawn.clear()
    build(results, out)
    assert len(drawn) == 2


def test_a_single_layer_run_at_layer_9_is_in_view(tmp_path):
    """`harness run --layer 9` records only layer 9: the plot must show it (not a -1..1 axis)."""
    probe(tmp_path, "hubert", 9, 0.7)
    (r,) = rank(load_records(tmp_path))
    assert [s.layer for s in r.layers] == [9]
    fig = figure(r)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo < 9 < hi and hi - lo <= 4
    fig.canvas.draw()
    x, y = ax.transData.transform((9, r.best.score))
    box = ax.get_window_extent()
    assert box.x0 < x < box.x1 and box.y0 < y < box.y1  # the point is drawn inside the axes
    assert 9 in [int(t) for t in ax.get_xticks() if lo <= t <= hi]


def test_weights_of_a_layer_subset_are_drawn_at_their_layers(tmp_path):
    for layer, p in enumerate([0.5, 0.6, 0.7, 0.6, 0.5, 0.4]):
        probe(tmp_path, "dino", layer, p)
    probe(tmp_path, "dino", "weighted_0_1_2_3_5", 0.7, layers=[0, 1, 2, 3, 5], weights=[0.1, 0.1, 0.2, 0.2, 0.4])
    (r,) = rank(load_records(tmp_path))
    bars = figure(r).axes[1].patches
    assert [round(b.get_x() + b.get_width() / 2) for b in bars] == [0, 1, 2, 3, 5]


def test_compact_pngs_keep_the_picture(results, tmp_path):
    (r, _) = rank(load_records(results))
    path = plot(r, tmp_path / "p.png")
    buf = io.BytesIO()
    figure(r).savefig(buf, format="png")
    full = np.asarray(Image.open(buf).convert("RGB"), dtype=int)
    small = Image.open(path)
    assert small.mode == "P" and path.stat().st_size < len(buf.getvalue()) / 2
    assert np.abs(np.asarray(small.convert("RGB"), dtype=int) - full).max() <= 24  # within a few levels per channel
    assert compact_png(path.read_bytes()) == path.read_bytes()  # deterministic and already compact
    few = Image.new("RGB", (40, 10), "white")
    few.paste((21, 128, 61), (0, 0, 20, 10))
    buf = io.BytesIO()
    few.save(buf, format="PNG")
    exact = Image.open(io.BytesIO(compact_png(buf.getvalue()))).convert("RGB")
    assert np.array_equal(np.asarray(exact), np.asarray(few))  # up to 256 colours: exact


def test_each_table_says_where_its_layer_was_chosen(tmp_path):
    """Records with dev outcomes: best decided on dev (dev column filled, "chosen on dev"); older
    records without them: "chosen on test" and no dev value. The best on dev is reported even
    when another layer scores higher on test."""
    root = tmp_path / "results"
    n = 200
    for layer, (p_dev, p_test) in enumerate([(0.9, 0.5), (0.5, 0.9)]):
        rec = ResultRecord(UpstreamRef("devmodel", "hf", "@x", None, False, None, ("a", "b")), "ic",
                           MetricSpec("accuracy", True), f"layer_{layer}", layer, [layer], None,
                           {"accuracy": p_dev}, {"accuracy": p_test}, 10, 20, 0, {"lr": 0.1},
                           {"kind": "external", "root": "/x"}, "k", n, {"harness": "0.1.0"})
        ids = [f"u{i}" for i in range(n)]
        write_record(root, rec, Outcomes.accuracy(ids, [int(i < p_test * n) for i in range(n)]),
                     Outcomes.accuracy(ids, [int(i < p_dev * n) for i in range(n)]))
    probe(root, "oldmodel", 0, 0.3)
    probe(root, "oldmodel", 1, 0.6)
    build(root, tmp_path / "out")
    md = (tmp_path / "out" / "LEADERBOARD.md").read_text()
    dev_row = next(line for line in md.splitlines() if line.startswith("| devmodel"))
    old_row = next(line for line in md.splitlines() if line.startswith("| oldmodel"))
    assert "| 0 (a) | 0.9000 | 0.5000 |" in dev_row  # chosen on dev, reported on test
    assert "| 1 (l1) | - |" in old_row
    # one setting holds both: the table says the choice differs by row
    assert "Layer choice: best and ~best chosen on dev where the records kept dev outcomes, else on test" in md
    csv_rows = (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()
    assert csv_rows[0].endswith(",chosen_on,best_dev")
    assert any(r.startswith("ic,") and ",devmodel," in r and r.endswith(",dev,0.9000") for r in csv_rows)
    assert any(",oldmodel," in r and r.endswith(",test,") for r in csv_rows)
    assert "Layer choice: best and ~best chosen on dev where" in (tmp_path / "out" / "index.html").read_text()
    shutil.rmtree(root / "oldmodel")
    build(root, tmp_path / "out")
    assert "Layer choice: best and ~best chosen on dev, test reported" in (tmp_path / "out" / "LEADERBOARD.md").read_text()
