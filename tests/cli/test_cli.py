"""The command line: every help works, bad input is one line and a non-zero exit, no noise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.cli import build_parser, main


def _subcommands(parser, prefix=()):
    """Every (sub)command path of the parser, e.g. ('corpus', 'build')."""
    out = [prefix]
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                out += _subcommands(sub, prefix + (name,))
    return out


def test_every_help_exits_zero(capsys):
    commands = _subcommands(build_parser())
    assert ("run",) in commands and ("analyze", "cca") in commands and ("benchmark",) in commands
    for path in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: harness"), path
    assert main([]) == 0 and "COMMAND" in capsys.readouterr().out  # bare `harness` shows the help


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


_CHECK_IMPORTS = """
import sys
from harness.cli import main
code = main(sys.argv[1:])
print("heavy imports:", sorted(m for m in ("torch", "numpy", "pytorch_lightning", "transformers") if m in sys.modules))
sys.exit(code)
"""


def test_name_typos_are_reported_before_any_heavy_import(tmp_path):
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    for args, msg in [(["--upstream", "hubert_bsae", "--task", "sid"], "unknown upstream 'hubert_bsae'"),
                      (["--upstream", "fbank", "--task", "sdi"], "unknown task 'sdi'"),
                      (["--upstream", "fbank", "--task", "sid", "--data-root", str(tmp_path / "nope")], "does not exist")]:
        proc = subprocess.run([sys.executable, "-c", _CHECK_IMPORTS, "run", *args], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 2 and msg in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert "heavy imports: []" in proc.stdout  # torch alone takes seconds and ~1 GB to import


def test_cli_run_prints_results_and_no_third_party_banner(tiny_corpus, tmp_path):
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    base = ["run", "--upstream", "fbank", "--data-root", str(tiny_corpus), "--out", str(tmp_path / "r"),
            "--max-steps", "4", "--set", "val_interval=2", "--protocol", "quick"]
    ok = _cli(*base, "--task", "slu", "--layer", "0", env=env)
    assert ok.returncode == 0, ok.stderr
    assert list((tmp_path / "r" / "fbank" / "ic").glob("*/layer_0_seed0.json")) and "layer_0" in ok.stdout
    noise = ("Tip:", "litlogger", "GPU available", "TPU available", "LOCAL_RANK", "💡", "Trainer(", "UserWarning",
             "FutureWarning", "LOAD REPORT")
    assert not [n for n in noise if n in ok.stderr], ok.stderr
    cases = [
        (["--task", "ic", "--layer", "3"], "out of range"),
        (["--task", "ic", "--layer", "1-x"], "is not N"),
        (["--task", "ic", "--set", "nonsense=1"], "unknown config key"),
        (["--task", "ic", "--set", "lr=abc"], "lr must be a number"),
        (["--task", "ic", "--set", "batch_size=0"], "batch_size must be an integer >= 1"),
    ]
    for extra, msg in cases:
        proc = _cli(*base, *extra, env=env)
        assert proc.returncode == 2 and msg in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    wrong = _cli("run", "--upstream", "fbank", "--task", "sid", "--data-root", str(tmp_path), "--quiet", env=env)
    assert wrong.returncode == 2 and "iden_split.txt" in wrong.stderr and wrong.stderr.count("\n") == 1


def test_plan_prints_the_numbers_and_writes_nothing(tiny_corpus, tmp_path):
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    proc = _cli("plan", "--upstream", "mfcc", "--task", "phone", "--data-root", str(tiny_corpus), "--no-timing", env=env)
    assert proc.returncode == 0, proc.stderr
    for word in ("train", "dev", "test", "total", "free", "fits", "mode: disk"):
        assert word in proc.stdout
    assert not (tmp_path / "home" / "features").exists() and not (tmp_path / "home" / "runs").exists()
