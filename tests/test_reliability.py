"""Reliability: concurrent runs, kill -9 at several points, bad input before work, umask, long input.

Every case is a real process (the CLI), as a user would meet it."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

RUN = ["run", "--task", "phone", "--layer", "all", "--quiet", "--set", "batch_size=4", "--set", "val_interval=4",
       "--protocol", "quick"]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return tiny_models.hf_hubert(tmp_path_factory.mktemp("hf") / "m", layers=2)


def _env(home: Path, **extra) -> dict:
    return {**os.environ, "HARNESS_HOME": str(home), **extra}


def _start(args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cli(args, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _numbers(out: Path) -> dict:
    """What a run measured, by probe (everything but provenance)."""
    got = {}
    for p in sorted(out.rglob("*_seed0.json")):
        r = json.loads(p.read_text())
        got[r["probe"]] = (r["test"], r["dev"], r["best_step"], r["dev_curve"], r["run_key"])
    return got


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not list(root.glob(pattern)):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, f"{pattern} never appeared"
        time.sleep(0.05)


def test_two_concurrent_runs_on_one_home_both_finish_with_identical_records(tiny_corpus, tiny_hf, tmp_path):
    env = _env(tmp_path / "home")
    args = RUN + ["--upstream", f"hf:{tiny_hf}", "--data-root", str(tiny_corpus), "--max-steps", "12"]
    procs = [_start(args + ["--out", str(tmp_path / f"out{i}")], env) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    a, b = _numbers(tmp_path / "out0"), _numbers(tmp_path / "out1")
    assert a == b and len(a) == 4
    # the shared cache is complete and every shard verifies
    from harness.features.cache import CacheEntry

    for manifest in (tmp_path / "home" / "features").glob("*/manifest.json"):
        entry = CacheEntry(manifest.parent, json.loads(manifest.read_text()))
        assert not [s for s in range(entry.num_shards) if entry.missing(s, range(entry.manifest["num_layers"]))]


@pytest.mark.parametrize("kill_at", ["extraction", "training"])
def test_kill_9_then_rerun_gives_the_clean_numbers(tiny_corpus, tiny_hf, tmp_path, kill_at):
    args = RUN + ["--upstream", f"hf:{tiny_hf}", "--data-root", str(tiny_corpus), "--max-steps", "40"]
    clean = _cli(args + ["--out", str(tmp_path / "clean")], _env(tmp_path / "clean-home"))
    assert clean.returncode == 0, clean.stderr
    home = tmp_path / "home"
    proc = _start(args + ["--out", str(tmp_path / "killed")], _env(home))
    if kill_at == "extraction":  # after the first split's layers are written, before the others
        _wait_for("features/*/shards/00000/layer_0*.npy", home, proc)
    else:  # after the first window's checkpoint
        _wait_for("runs/*/checkpoints/last.ckpt", home, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not list((tmp_path / "killed").rglob("*.json")) if (tmp_path / "killed").exists() else True
    again = _cli(args + ["--out", str(tmp_path / "killed")], _env(home))
    assert again.returncode == 0, again.stderr
    assert _numbers(tmp_path / "killed") == _numbers(tmp_path / "clean")


def test_sigterm_exits_143_with_one_line_and_the_rerun_resumes(tiny_corpus, tiny_hf, tmp_path):
    """A scheduler's kill must not look like success (Lightning alone ends fit() with exit code 0)."""
    args = RUN + ["--upstream", f"hf:{tiny_hf}", "--data-root", str(tiny_corpus), "--max-steps", "40"]
    clean = _cli(args + ["--out", str(tmp_path / "clean")], _env(tmp_path / "clean-home"))
    assert clean.returncode == 0, clean.stderr
    home = tmp_path / "home"
    proc = _start(args + ["--out", str(tmp_path / "killed")], _env(home))
    _wait_for("runs/*/checkpoints/last.ckpt", home, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("harness: terminated"), err
    assert not list((tmp_path / "killed").rglob("*.json")) if (tmp_path / "killed").exists() else True
    again = _cli(args + ["--out", str(tmp_path / "killed")], _env(home))
    assert again.returncode == 0, again.stderr
    assert _numbers(tmp_path / "killed") == _numbers(tmp_path / "clean")


def test_bad_input_is_one_line_before_any_work(tiny_corpus, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    base = ["run", "--upstream", "fbank", "--task", "sid", "--data-root", str(tiny_corpus), "--quiet", "--protocol",
            "quick"]
    cases = [
        (base + ["--out", str(a_file / "out")], {}, "--out"),
        (base, {"HARNESS_HOME": str(a_file / "home")}, "HARNESS_HOME"),
        (base + ["--set", "val_interval=0"], {}, "val_interval must be an integer >= 1"),
        (base + ["--set", "head.foo=1"], {}, "known: proj"),
        (base[:5] + ["--data-root", str(tmp_path / "missing")], {}, "does not exist"),
        (base + ["--devices", "3"], {}, "not divisible"),
        (["corpus", "build", "--profile", "tiny", "--out", str(a_file / "c")], {}, "cannot create"),
    ]
    for args, extra, msg in cases:
        env = _env(tmp_path / "home", **extra)
        proc = _cli(args, env)
        assert proc.returncode == 2, (args, proc.stderr)
        assert msg in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "home" / "features").exists()


def test_files_are_written_with_the_users_umask(tiny_corpus, tmp_path):
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):
        out = tmp_path / f"out{umask:o}"
        proc = subprocess.run([sys.executable, "-c", f"import os, sys; os.umask({umask}); from harness.cli import main; "
                               f"sys.exit(main(sys.argv[1:]))", "run", "--upstream", "fbank", "--task", "sid",
                               "--data-root", str(tiny_corpus), "--quiet", "--max-steps", "2", "--set",
                               "val_interval=2", "--protocol", "quick", "--out", str(out)], env=_env(tmp_path / f"home{umask:o}"),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        files = [p for p in out.rglob("*") if p.is_file()]
        files += [p for p in (tmp_path / f"home{umask:o}" / "features").rglob("*.npy")]
        assert files and {p.stat().st_mode & 0o777 for p in files} == {mode}


def test_an_interrupted_corpus_build_exits_with_one_line(tmp_path):
    """Interrupted early in a build that takes minutes (the default profile), so the signal can
    never arrive after the build is done however fast the machine (the tiny profile could finish
    first on a loaded machine and exit 0)."""
    proc = _start(["corpus", "build", "--profile", "default", "--out", str(tmp_path / "c"), "--quiet"], _env(tmp_path))
    _wait_for("c/LibriSpeech/*/*/*/*.flac", tmp_path, proc, timeout=300)  # synthesis under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "re-run" in err


def test_ctrl_c_during_training_is_one_line_and_130(tiny_corpus, tiny_hf, tmp_path):
    """Lightning catches Ctrl-C inside fit() and exits 1 with its notice hidden; the harness says
    what happened and exits 130, as during extraction. A budget no run can finish first."""
    home = tmp_path / "home"
    args = RUN + ["--upstream", f"hf:{tiny_hf}", "--data-root", str(tiny_corpus), "--max-steps", "1000000",
                  "--out", str(tmp_path / "out")]
    proc = _start(args, _env(home))
    _wait_for("runs/*/checkpoints/last.ckpt", home, proc)  # training is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("harness: interrupted"), err


def _corpus_copy(tiny_corpus: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(tiny_corpus, dest)
    return dest


def test_clips_shorter_than_the_upstream_input_are_left_out_and_counted(tiny_corpus, tmp_path):
    """A 100-sample clip gives fbank no frame (its 25 ms window): left out with a line and a count
    in the record, never scored from padding; the other utterances run as usual."""
    import soundfile as sf

    root = _corpus_copy(tiny_corpus, tmp_path / "corpus")
    rows = (root / "fluent_speech_commands_dataset" / "data" / "test_data.csv").read_text()
    victim = next(p for p in sorted((root / "fluent_speech_commands_dataset").rglob("*.wav"))
                  if p.name in rows)
    wave, rate = sf.read(str(victim), dtype="float32")
    sf.write(str(victim), wave[:100], rate)
    proc = _cli(["run", "--upstream", "fbank", "--task", "ic", "--layer", "0", "--data-root", str(root), "--quiet",
                 "--max-steps", "2", "--set", "val_interval=2", "--protocol", "quick", "--out", str(tmp_path / "out")],
                _env(tmp_path / "h"))
    assert proc.returncode == 0, proc.stderr
    assert "1 test utterance(s) shorter than 400 samples" in proc.stderr and victim.name in proc.stderr
    record = json.loads(next((tmp_path / "out").rglob("layer_0_seed0.json")).read_text())
    assert record["dropped_utterances"] == {"test: shorter than 400 samples": 1}
    assert record["test_utterances"] == len([line for line in rows.splitlines()[1:] if line.strip()]) - 1


def test_a_damaged_audio_file_is_one_line_and_leaves_no_empty_out(tiny_corpus, tmp_path):
    root = _corpus_copy(tiny_corpus, tmp_path / "corpus")
    victim = sorted((root / "VoxCeleb1" / "wav").rglob("*.wav"))[3]
    victim.write_bytes(b"RIFF....WAVEfmt garbage" * 4)
    out = tmp_path / "never"
    proc = _cli(["run", "--upstream", "fbank", "--task", "sid", "--data-root", str(root), "--quiet", "--max-steps", "2",
                 "--out", str(out)], _env(tmp_path / "h"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert victim.name in proc.stderr and "damaged" in proc.stderr
    assert not out.exists()


def test_a_long_file_runs_in_windows_on_the_files_frame_grid(tiny_corpus):
    """Bounded memory for long inputs: the model sees one window at a time; every kept frame is
    what the model gives on its own window, on the whole file's frame grid; the layer-norm CNN
    output (local, with whole-file waveform normalisation) equals the whole-file pass."""
    from harness.audio import read_audio
    from harness.features.extract import chunked_layers, iter_layers
    from harness.upstream import load_upstream, normalise_waveforms

    up = load_upstream("tiny_hubert_it1")  # layer-norm CNN, do_normalize
    files = sorted((tiny_corpus / "LibriSpeech").rglob("*.flac"))
    wave = np.concatenate([read_audio(f) for f in files])[: 16000 * 26]
    seen = []
    original = up.layers
    up.layers = lambda w, l: seen.append(w.shape[1]) or original(w, l)
    chunk, ctx = 6.0, 2.0
    got = chunked_layers(up, wave, set(range(up.num_layers)), chunk_s=chunk, context_s=ctx)
    assert len(seen) == 4 and max(seen) <= (chunk + 2 * ctx) * 16000 + 320  # never the whole file
    up.layers = original
    whole = up.layers(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    frames = int(whole.lengths[0][0])
    assert all(g.shape == (frames, 128) for g in got)
    assert np.allclose(got[0], whole.hidden[0][0, :frames].numpy(), atol=1e-4)  # layer 0: exact
    # window 2 on its own: frames [2*core - ctx, ...) of the file, normalised with the file's statistics
    core, c = int(chunk * 16000) // 320, int(ctx * 16000) // 320
    normed = normalise_waveforms(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))[0]
    first = 2 * core - c
    piece = normed[first * 320: (3 * core + c) * 320 + 320][None]
    up.normalize = False
    alone = up.layers(piece, torch.tensor([piece.shape[1]]))
    up.normalize = True
    for layer in range(up.num_layers):
        assert np.allclose(got[layer][2 * core: 3 * core], alone.hidden[layer][0, c: c + core].numpy(), atol=1e-4)
    # iter_layers sends files longer than the threshold to the windows
    calls = []
    import harness.features.extract as extract

    real = extract.chunked_layers
    extract.chunked_layers = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        list(iter_layers(up, [wave, wave[:16000]], long_seconds=20.0))
    finally:
        extract.chunked_layers = real
    assert calls == [1]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_partial_file(tiny_corpus, tmp_path, monkeypatch, capsys,
                                                                         err):
    """Whatever writes (a feature cache while extracting, records, the leaderboard) the storage's
    refusal is one line naming the file and exit 1; the temporary file is gone."""
    import harness.fsutil
    from harness.cli import main

    real_replace = os.replace

    def refuse(src, dst, *args, **kwargs):
        if str(dst).endswith((".npy", ".json", ".md", ".csv", ".html", ".png", ".npz")):
            raise OSError(err, os.strerror(err))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(harness.fsutil.os, "replace", refuse)
    code = main(["run", "--upstream", "fbank", "--task", "sid", "--data-root", str(tiny_corpus), "--quiet",
                 "--max-steps", "2", "--set", "val_interval=2", "--protocol", "quick", "--out", str(tmp_path / "out")])
    err_text = capsys.readouterr().err
    assert code == 1 and err_text.count("\n") == 1 and "Traceback" not in err_text, err_text
    assert "cannot write" in err_text and os.strerror(err) in err_text and str(tmp_path / "home") in err_text
    assert not [p for p in (tmp_path / "home").rglob("*.tmp*")]
    import shutil

    results = tmp_path / "results"
    shutil.copytree(Path(__file__).resolve().parents[1] / "results" / "fbank" / "sid", results / "fbank" / "sid")
    code = main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "board")])
    err_text = capsys.readouterr().err
    assert code == 1 and err_text.count("\n") == 1 and "Traceback" not in err_text, err_text
    assert "cannot write" in err_text and str(tmp_path / "board") in err_text
    assert not [p for p in (tmp_path / "board").rglob("*.tmp*")]


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`harness upstreams | head -1`: the pipe closes before the table is written; no traceback,
    the exit status of a filter stopped by SIGPIPE (141)."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "upstreams"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(tmp_path / "h"))
    proc.stdout.close()  # the reader is gone before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and err == "", err
