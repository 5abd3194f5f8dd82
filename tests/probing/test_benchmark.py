"""harness benchmark: many runs in one process, each upstream loaded once, finished runs skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.probing.benchmark import load_config, run_benchmark
from harness.reports.suite import summary

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_shipped_configs_parse_and_quick_is_part_of_full():
    quick = load_config(ROOT / "benchmarks" / "quick.yaml")
    full = load_config(ROOT / "benchmarks" / "full.yaml")
    pairs = lambda jobs: {(u, t, j.random_init, str(j.out)) for j in jobs for u in j.upstreams for t in j.tasks}
    assert pairs(quick) <= pairs(full) and len(pairs(quick)) == 9


def test_bad_configs_are_refused_before_any_work(tmp_path):
    cases = [
        ("jobs: []\n", "non-empty 'jobs'"),
        ("jobs:\n  - upstreams: [fbank]\n    tasks: [nope]\n", "unknown task 'nope'"),
        ("jobs:\n  - upstreams: [no_such_model]\n    tasks: [sid]\n", "unknown upstream"),
        ("jobs:\n  - upstreams: [fbank]\n    tasks: [sid]\n    seeed: 1\n", "unknown key"),
        ("jobs:\n  - upstreams: [fbank]\n", "non-empty list"),
        ("out: r\nextra: 1\njobs:\n  - upstreams: [fbank]\n    tasks: [sid]\n", "top-level"),
        ("jobs: [\n", "not valid YAML"),
    ]
    for text, msg in cases:
        with pytest.raises(HarnessError, match=msg):
            load_config(_write(tmp_path / "b.yaml", text))


def test_a_benchmark_runs_in_one_process_loading_each_upstream_once(tiny_corpus, tmp_path, monkeypatch):
    import harness.upstream as upstream_module

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    config = _write(tmp_path / "b.yaml", f"""
protocol: quick
out: {tmp_path / 'res'}
jobs:
  - upstreams: [fbank, mfcc]
    tasks: [sid, ic]
    data_root: {tiny_corpus}
    max_steps: 4
    set: {{val_interval: 2, batch_size: 8}}
""")
    loads = []
    real = upstream_module.load_upstream
    monkeypatch.setattr(upstream_module, "load_upstream", lambda spec, **kw: loads.append(spec) or real(spec, **kw))
    first = run_benchmark(load_config(config), progress=False)
    assert [(o.upstream, o.task) for o in first] == [("fbank", "sid"), ("fbank", "ic"), ("mfcc", "sid"), ("mfcc", "ic")]
    assert loads == ["fbank", "mfcc"] and not any(o.reused for o in first)
    table = summary(first)
    assert "fbank" in table and "mfcc" in table and table.count("\n") == 4
    again = run_benchmark(load_config(config), progress=False)
    assert all(o.reused for o in again) and [o.paths for o in again] == [o.paths for o in first]


def test_the_cli_prints_the_ranking_and_the_leaderboard(tiny_corpus, tmp_path):
    config = _write(tmp_path / "b.yaml", f"""
protocol: quick
out: {tmp_path / 'res'}
jobs:
  - upstreams: [mfcc]
    tasks: [sid]
    data_root: {tiny_corpus}
    max_steps: 2
    set: {{val_interval: 2, batch_size: 8}}
""")
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "benchmark", str(config), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "mfcc" in proc.stdout and "leaderboard:" in proc.stdout and "1 runs (0 already finished" in proc.stdout
    assert (tmp_path / "res" / "LEADERBOARD.md").exists()


def test_a_study_section_builds_its_page(tiny_corpus, tmp_path, monkeypatch):
    from harness.reports.study import build
    from harness.reports.suite import load_study

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    config = _write(tmp_path / "s.yaml", f"""
protocol: quick
out: {tmp_path / 'res'}
jobs:
  - upstreams: [fbank, mfcc]
    tasks: [ks, sid]
    data_root: {tiny_corpus}
    max_steps: 2
    set: {{val_interval: 2, batch_size: 8}}
study:
  out: {tmp_path / 'res' / 'study'}
  groups: {{content: [ks], speaker: [sid]}}
  cka: [[fbank, mfcc]]
""")
    outcomes = run_benchmark(load_config(config), progress=False)
    own = [p for o in outcomes for p in o.paths]
    page = build(load_study(config), tmp_path / "res", tiny_corpus, progress=False)
    text = page.read_text()
    assert "## content" in text and "## speaker" in text and "| fbank |" in text and "| mfcc |" in text
    assert (page.parent / "cka__fbank__mfcc.png").exists() and (page.parent / "index.html").exists()
    # records of other upstreams under the same results folder stay off a study's page
    page = build(load_study(config), tmp_path / "res", tiny_corpus, progress=False, labels={"fbank"})
    assert "| fbank |" in page.read_text() and "| mfcc |" not in page.read_text()
    # another setting of fbank/sid under the same folder (here: another lr) never takes a cell:
    # the study ranks its own runs; from the whole folder the doubled cell is refused
    other = _write(tmp_path / "o.yaml", f"""
protocol: quick
out: {tmp_path / 'res'}
jobs:
  - upstreams: [fbank]
    tasks: [sid]
    data_root: {tiny_corpus}
    max_steps: 2
    set: {{val_interval: 2, batch_size: 8, lr: 0.5}}
""")
    run_benchmark(load_config(other), progress=False)
    before = build(load_study(config), tmp_path / "res", tiny_corpus, progress=False, records=own).read_text()
    assert before == text
    with pytest.raises(HarnessError, match="fbank has 2 settings of sid"):
        build(load_study(config), tmp_path / "res", tiny_corpus, progress=False)
    with pytest.raises(HarnessError, match="groups"):
        load_study(_write(tmp_path / "bad.yaml", "jobs:\n  - upstreams: [fbank]\n    tasks: [sid]\nstudy: {out: x}\n"))


def test_a_run_inside_a_benchmark_equals_the_same_run_alone(tiny_corpus, tmp_path):
    """No state leaks from earlier runs of a benchmark process into a later one (global RNG,
    thread count, deterministic flags, a reused upstream): fbank/sid as the third run of a
    benchmark, after two runs of other upstreams and tasks, gives the records it gives alone."""
    import json

    common = f"    data_root: {tiny_corpus}\n    max_steps: 6\n    set: {{val_interval: 3, batch_size: 8}}\n"
    config = _write(tmp_path / "b.yaml", f"out: {tmp_path / 'bench'}\njobs:\n"
                    f"  - upstreams: [mfcc]\n    tasks: [ic, phone]\n{common}"
                    f"  - upstreams: [fbank]\n    tasks: [sid]\n    seed: 3\n{common}")
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home-bench"))
    bench = subprocess.run([sys.executable, "-m", "harness.cli", "benchmark", str(config), "--quiet"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr
    alone = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--upstream", "fbank", "--task", "sid",
                            "--seed", "3", "--data-root", str(tiny_corpus), "--max-steps", "6", "--set", "val_interval=3",
                            "--set", "batch_size=8", "--out", str(tmp_path / "alone"), "--quiet"],
                           env=dict(os.environ, HARNESS_HOME=str(tmp_path / "home-alone")), capture_output=True,
                           text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr

    def numbers(root: Path) -> dict:
        out = {}
        for p in sorted((root / "fbank" / "sid").rglob("*_seed3.json")):
            r = json.loads(p.read_text())
            out[r["probe"]] = (r["run_key"], r["dev"], r["test"], r["best_step"], r["dev_curve"], r["layer_weights"])
        return out

    got, want = numbers(tmp_path / "bench"), numbers(tmp_path / "alone")
    assert want and got == want
