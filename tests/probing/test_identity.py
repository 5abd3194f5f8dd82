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


def test_fingerprints_follow_a_changed_manifest_within_one_process(tmp_path):
    """The manifest is read once per process while unchanged; a rewritten manifest (another
    content hash for a file) or a file it does not list is seen at once."""
    import os

    from harness.features.cache import _corpus_fingerprints
    from harness.task import Example

    (tmp_path / "a").mkdir()
    for name in ("x.flac", "y.flac"):
        (tmp_path / "a" / name).write_bytes(b"audio " + name.encode())
    manifest = tmp_path / "manifest.sha256"
    manifest.write_text("1111  a/x.flac\n")
    examples = [Example("x", tmp_path / "a" / "x.flac", 0), Example("y", tmp_path / "a" / "y.flac", 0)]
    first = _corpus_fingerprints(examples)
    size = (tmp_path / "a" / "y.flac").stat().st_size
    assert first[0] == "1111" and first[1].startswith(f"{size}:")  # not listed: size and mtime
    manifest.write_text("2222  a/x.flac\n3333  a/y.flac\n")
    os.utime(manifest, ns=(1, 1))  # a rewrite within the clock's resolution is told by its size too
    assert _corpus_fingerprints(examples) == ["2222", "3333"]


def test_phone_labels_are_parsed_once_and_reread_when_changed(tmp_path):
    from harness.data import read_phone_labels

    (tmp_path / "converted_aligned_phones.txt").write_text("u1 0 0 1\nu2 1 2\n")
    labels, inventory = read_phone_labels(tmp_path)
    assert labels == {"u1": (0, 0, 1), "u2": (1, 2)} and inventory == ["0", "1", "2"]
    labels.pop("u1")  # the caller's dict is its own
    assert "u1" in read_phone_labels(tmp_path)[0]
    (tmp_path / "converted_aligned_phones.txt").write_text("u1 3 3 3 3\n")
    labels, inventory = read_phone_labels(tmp_path)
    assert labels == {"u1": (3, 3, 3, 3)} and inventory == ["0", "1", "2", "3"]
