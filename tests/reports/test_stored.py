"""Stored rankings (harness.reports.stored) are exactly what rank() computes, and only reused while
their inputs are unchanged."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from harness.records import (
    MetricSpec,
    Outcomes,
    ResultRecord,
    UpstreamRef,
    write_record,
)
from harness.reports import stored
from harness.reports.ranking import load_records, rank
from harness.reports.stored import rank_stored

REPO = Path(__file__).resolve().parents[2]


def _record(root: Path, upstream: str, layer: int, p: float, n: int = 80) -> Path:
    rng = np.random.default_rng(zlib.crc32(f"{upstream} {layer} {p}".encode()))
    correct = (rng.random(n) < p).astype(int).tolist()
    rec = ResultRecord(UpstreamRef(upstream, "hf", "@x", None, False, None, ("a", "b", "c")), "ic",
                       MetricSpec("accuracy", True), f"layer_{layer}", layer, [layer], None, {"accuracy": 0.5},
                       {"accuracy": sum(correct) / n}, 10, 20, 0, {"lr": 0.1}, {"kind": "external", "root": "/x"},
                       "k", n, {"harness": "0.1.0"})
    return write_record(root, rec, Outcomes.accuracy([f"u{i}" for i in range(n)], correct))


def _forbid_ranking(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("ranked again although nothing changed")

    monkeypatch.setattr(stored, "rank", fail)


@pytest.mark.parametrize("task", ["asv", "ic"])
def test_stored_rankings_equal_computed_ones_on_committed_records(task, tmp_path, monkeypatch):
    """ASV (clustered trials, dev outcomes on the re-run records) and IC (utterances, seeds, weighted
    sums): every field equal, first computed and stored, then read back."""
    records = load_records(REPO / "results", task=task)
    assert records
    expected = rank(records)
    assert rank_stored(records, store=tmp_path) == expected
    assert len(list(tmp_path.glob("*.json"))) == len(expected)
    _forbid_ranking(monkeypatch)
    assert rank_stored(records, store=tmp_path) == expected


def test_a_changed_record_is_ranked_again_and_others_are_read(tmp_path, monkeypatch):
    root = tmp_path / "results"
    for layer, p in enumerate([0.3, 0.6, 0.8]):
        _record(root, "modelA", layer, p)
        _record(root, "modelB", layer, p)
    store = tmp_path / "store"
    before = rank_stored(load_records(root), store=store)
    _record(root, "modelA", 2, 0.1)  # the same record file, other outcomes
    calls = []
    real = stored.rank

    def counting(group, *a, **k):
        calls.append({r.upstream.spec for r in group})
        return real(group, *a, **k)

    monkeypatch.setattr(stored, "rank", counting)
    after = rank_stored(load_records(root), store=store)
    assert calls == [{"modelA"}]
    assert after == rank(load_records(root)) and after != before
    assert after[1] == before[1]  # modelB untouched


def test_a_damaged_entry_is_recomputed_and_an_unwritable_store_costs_only_time(tmp_path):
    root = tmp_path / "results"
    for layer, p in enumerate([0.4, 0.7]):
        _record(root, "m", layer, p)
    records = load_records(root)
    store = tmp_path / "store"
    expected = rank_stored(records, store=store)
    (entry,) = store.glob("*.json")
    entry.write_text("{not json")
    assert rank_stored(records, store=store) == expected
    blocked = tmp_path / "file"
    blocked.write_text("a file where the store's folder would be")
    assert rank_stored(records, store=blocked / "rankings") == expected


def test_records_copied_elsewhere_reuse_the_stored_ranking(tmp_path, monkeypatch):
    """The key is the records' content, not where they sit (a fresh clone of the same results)."""
    root = tmp_path / "results"
    for layer, p in enumerate([0.4, 0.7]):
        _record(root, "m", layer, p)
    store = tmp_path / "store"
    expected = rank_stored(load_records(root), store=store)
    shutil.copytree(root, tmp_path / "elsewhere")
    _forbid_ranking(monkeypatch)
    assert rank_stored(load_records(tmp_path / "elsewhere"), store=store) == expected
