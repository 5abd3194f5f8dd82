"""A run's identity: content, not locations; everything that changes the numbers, nothing else."""

from __future__ import annotations

import shutil

from harness.probing.engine import RunRequest, prepare
from harness.probing.identity import corpus_identity
from harness.registry import load_task


def _key(corpus, tmp_path, **kw) -> str:
    req = RunRequest(upstream=kw.pop("upstream", "fbank"), task=kw.pop("task", "sid"), data_root=corpus,
                     out=tmp_path / "out", progress=False, protocol=kw.pop("protocol", "quick"), **kw)
    return prepare(req).key


def test_the_same_experiment_elsewhere_has_the_same_key(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    here = _key(tiny_corpus, tmp_path)
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(tiny_corpus, moved)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "other-home"))
    assert _key(moved, tmp_path / "x") == here  # other corpus path, other home, other --out
    assert _key(tiny_corpus, tmp_path, max_steps=7) == here  # a longer run continues a shorter one
    different = [_key(tiny_corpus, tmp_path, seed=1), _key(tiny_corpus, tmp_path, overrides={"lr": 0.01}),
                 _key(tiny_corpus, tmp_path, layer="weighted"), _key(tiny_corpus, tmp_path, upstream="mfcc"),
                 _key(tiny_corpus, tmp_path, devices=2), _key(tiny_corpus, tmp_path, cache="none")]
    assert len(set(different + [here])) == len(different) + 1


def test_an_external_corpus_is_identified_by_its_files(tiny_corpus, tmp_path):
    task = load_task("sid")(load_task("sid").default_config())
    vox = tmp_path / "a" / "VoxCeleb1"
    shutil.copytree(tiny_corpus / "VoxCeleb1", vox)  # no corpus.json: an external corpus
    ex = task.examples(vox.parent, "test")
    first = corpus_identity(vox.parent, ex)
    assert first["kind"] == "external" and first["examples"] == len(ex)
    shutil.copytree(vox, tmp_path / "b" / "VoxCeleb1")
    assert corpus_identity(tmp_path / "b", task.examples(tmp_path / "b", "test")) == first
    with open(ex[0].path, "ab") as fh:  # a changed file
        fh.write(b"\0\0")
    assert corpus_identity(vox.parent, ex) != first


def test_data_a_run_does_not_read_never_changes_its_identity(tiny_corpus, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(tiny_corpus, copy)
    task = load_task("sid")(load_task("sid").default_config())
    ex = [e for s in ("train", "dev", "test") for e in task.examples(copy, s)]
    before = corpus_identity(copy, ex)
    # another layout's files change (and with them the corpus manifest): this run's data did not
    flac = next((copy / "LibriSpeech").rglob("*.flac"))
    manifest = (copy / "manifest.sha256").read_text().replace(
        next(l for l in (copy / "manifest.sha256").read_text().splitlines() if flac.name in l)[:64], "0" * 64)
    (copy / "manifest.sha256").write_text(manifest)
    assert corpus_identity(copy, ex) == before
    # a label the run reads does change it
    relabelled = [type(e)(e.id, e.path, ("someone-else",), e.reference) if i == 0 else e for i, e in enumerate(ex)]
    assert corpus_identity(copy, relabelled) != before
