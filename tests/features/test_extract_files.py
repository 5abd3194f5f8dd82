"""``harness extract`` over a file, a folder or a list: equal to one-file extraction, resumable,
resampling on request, short clips and wrong outputs in one line."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from harness.cli import main
from harness.errors import HarnessError
from harness.features.extract import extract_files, extraction_inputs
from harness.upstream import load_upstream


def _write(path, seconds, rate=16000, channels=1, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = np.random.default_rng(seed).normal(scale=0.1, size=(int(seconds * rate), channels)).astype(np.float32)
    sf.write(str(path), wave, rate, subtype="FLOAT" if path.suffix == ".wav" else None)
    return wave


def _layers(path):
    with np.load(path) as z:
        return [z[f"layer_{i}"] for i in range(len(z.files))]


def test_a_folder_equals_each_file_alone_and_a_rerun_keeps_what_is_there(tmp_path, capsys):
    src = tmp_path / "in"
    for k, secs in enumerate([1.0, 2.5, 0.7]):
        _write(src / ("sub" if k else "") / f"a{k}.wav", secs, seed=k)
    assert main(["extract", "--upstream", "mfcc", "--wav", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "wrote 3 file(s)" in capsys.readouterr().out
    for wav, name in extraction_inputs(src):
        alone = tmp_path / "alone" / name.name
        assert main(["extract", "--upstream", "mfcc", "--wav", str(wav), "--out", str(alone)]) == 0
        got = _layers(tmp_path / "out" / name)
        assert all(np.array_equal(a, b) for a, b in zip(got, _layers(alone)))
    (tmp_path / "out" / "a0.npz").unlink()
    assert main(["extract", "--upstream", "mfcc", "--wav", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "wrote 1 file(s), 2 already there" in capsys.readouterr().out


def test_a_list_names_outputs_by_file_name(tmp_path):
    _write(tmp_path / "x" / "one.flac", 1.0)
    _write(tmp_path / "y" / "two.wav", 1.2, seed=1)
    lst = tmp_path / "files.txt"
    lst.write_text("x/one.flac\n# a comment\n\n" + str(tmp_path / "y" / "two.wav") + "\n")
    summary = extract_files(load_upstream("mfcc"), lst, tmp_path / "o")
    assert [p.name for p in summary.written] == ["one.npz", "two.npz"] and not summary.too_short


def test_other_rates_are_refused_unless_resampled_and_then_equal_torchaudios_resampler(tmp_path):
    wave = _write(tmp_path / "r.wav", 1.0, rate=22050)[:, 0]
    up = load_upstream("mfcc")
    with pytest.raises(HarnessError, match="22050"):
        extract_files(up, tmp_path / "r.wav", tmp_path / "r.npz")
    extract_files(up, tmp_path / "r.wav", tmp_path / "r.npz", resample=True)
    resampled = torchaudio.functional.resample(torch.from_numpy(wave), 22050, 16000).numpy()
    _write_exact = tmp_path / "r16.wav"
    sf.write(str(_write_exact), resampled, 16000, subtype="FLOAT")
    extract_files(up, _write_exact, tmp_path / "r16.npz")
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(_layers(tmp_path / "r.npz"), _layers(tmp_path / "r16.npz")))


def test_stereo_is_the_mean_of_its_channels(tmp_path):
    stereo = _write(tmp_path / "s.wav", 1.0, channels=2)
    sf.write(str(tmp_path / "m.wav"), stereo.mean(axis=1), 16000, subtype="FLOAT")
    sf.write(str(tmp_path / "s.wav"), stereo, 16000, subtype="FLOAT")
    up = load_upstream("mfcc")
    extract_files(up, tmp_path / "s.wav", tmp_path / "s.npz")
    extract_files(up, tmp_path / "m.wav", tmp_path / "m.npz")
    assert all(np.array_equal(a, b) for a, b in zip(_layers(tmp_path / "s.npz"), _layers(tmp_path / "m.npz")))


def test_short_clips_and_wrong_outputs_are_one_line(tmp_path, capsys):
    up = load_upstream("mfcc")
    need = up.info.shortest_input()
    sf.write(str(tmp_path / "in" / "short.wav") if (tmp_path / "in").mkdir() is None else None,
             np.zeros(need - 1, np.float32), 16000)
    _write(tmp_path / "in" / "ok.wav", 1.0)
    with pytest.raises(HarnessError, match=f"shorter than {need}"):
        extract_files(up, tmp_path / "in" / "short.wav", tmp_path / "s.npz")
    summary = extract_files(up, tmp_path / "in", tmp_path / "o")
    assert [p.name for p in summary.written] == ["ok.npz"] and [p.name for p in summary.too_short] == ["short.wav"]
    assert "left out 1 file(s) shorter than" in summary.format()
    code = main(["extract", "--upstream", "mfcc", "--wav", str(tmp_path / "in"), "--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "must be a folder" in err
    code = main(["extract", "--upstream", "mfcc", "--wav", str(tmp_path / "in" / "ok.wav"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "must end in .npz" in err
    code = main(["extract", "--upstream", "mfcc", "--wav", str(tmp_path / "empty"), "--out", str(tmp_path / "y")])
    assert code != 0 and "not found" in capsys.readouterr().err
