"""The analysis contract: options declared once (command line and library), the registry,
the table result's files and terminal view, and refusals in one line."""

from __future__ import annotations

import argparse
import csv

import pytest

from harness.analysis.analyses import Cca, Cka, Svcca
from harness.analysis.cca import RELATIVE_EPSILONS, CcaProtocol
from harness.analysis.options import CcaOptions, CkaOptions, NeuronOptions
from harness.analysis.runner import run_analysis
from harness.analysis.tables import Table
from harness.errors import HarnessError
from harness.registry import analysis_names, load_analysis


def _parse(analysis, argv: list[str]):
    parser = argparse.ArgumentParser()
    analysis.add_arguments(parser)
    return analysis.parse(parser.parse_args(argv))


def test_options_come_from_the_command_line_with_the_dataclass_defaults():
    options = _parse(Cca, ["--upstream", "fbank", "--property", "word", "--epsilons", "1e-3", "1e-2", "--folds", "8"])
    assert options == CcaOptions(upstream="fbank", prop="word", epsilons=(1e-3, 1e-2), folds=8)
    assert options.trials == 3 and options.max_samples == 20000 and options.weights == "smaller"
    protocol = CcaProtocol.of(options)
    assert protocol.epsilons == (1e-3, 1e-2) and len(protocol.pairs) == 4  # one epsilon per view
    relative = CcaProtocol.of(_parse(Cca, ["--upstream", "fbank", "--property", "mel", "--convention", "relative"]))
    assert relative.epsilons == RELATIVE_EPSILONS and len(relative.pairs) == len(RELATIVE_EPSILONS)
    svcca = _parse(Svcca, ["--upstream", "fbank", "--property", "mel"])
    assert CcaProtocol.of(svcca).measure == "svcca"
    with pytest.raises(SystemExit):  # SVCCA has no projection weights to choose
        _parse(Svcca, ["--upstream", "fbank", "--property", "mel", "--weights", "x"])
    with pytest.raises(SystemExit):  # the property is required
        _parse(Cca, ["--upstream", "fbank"])


def test_help_with_a_percent_sign_formats(capsys):
    from harness.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "svcca", "--help"])
    assert exit_info.value.code == 0 and "99% of variance" in capsys.readouterr().out


@pytest.mark.parametrize("build, message", [
    (lambda: CcaOptions(prop="mel"), "give --upstream or --checkpoints"),
    (lambda: CkaOptions(), "give --upstream"),
    (lambda: CkaOptions(upstream="fbank", minibatch=2), "at least 4 frames"),
    (lambda: CkaOptions(upstream="fbank", minibatch=64, pwcca=True), "without --minibatch"),
    (lambda: CkaOptions(checkpoints=("fbank", "mfcc"), pwcca=True), "apply to --upstream"),
    (lambda: NeuronOptions(upstream="fbank", against="hubert_bsae"), "unknown upstream 'hubert_bsae'"),
    (lambda: CcaProtocol.of(CcaOptions(upstream="fbank", prop="mel", folds=4, trials=3)), "needs 6 folds"),
])
def test_bad_options_are_refused_in_one_line(build, message):
    with pytest.raises(HarnessError, match=message):
        build()


def test_the_registry_lists_the_core_analyses():
    assert {"cca", "svcca", "cka", "neurons", "attention"} <= set(analysis_names())
    assert load_analysis("cka") is Cka
    with pytest.raises(HarnessError, match="unknown analysis 'ckaa'"):
        load_analysis("ckaa")


def test_a_table_writes_its_files_beside_the_csv_and_names_them(tmp_path):
    drawn = []
    table = Table([{"layer": 0, "score": 0.123456789}], companions={".summary.csv": [{"n": 1}]},
                  pictures={".png": drawn.append}, lines=["a line"],
                  listed=[("rows", ""), ("summary", ".summary.csv"), ("plot", ".png")])
    assert table.format() == "a line"  # nothing written yet
    out = table.write(tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_text() == "layer,score\n0,0.123457\n"
    assert list(csv.DictReader(open(tmp_path / "x.summary.csv"))) == [{"n": "1"}]
    assert drawn == [tmp_path / "x.png"]
    assert table.format().splitlines() == ["a line", f"rows: {out}; summary: {tmp_path / 'x.summary.csv'}; "
                                                     f"plot: {tmp_path / 'x.png'}"]
    table.check()
    failed = Table([], lines=["header"], failure="no CCA fit succeeded: singular")
    failed.write(tmp_path / "f.csv")
    assert failed.format() == "header"  # no file list for a failed analysis
    with pytest.raises(HarnessError, match="no CCA fit succeeded"):
        failed.check()


def test_run_analysis_refuses_another_analysis_options(tmp_path):
    with pytest.raises(HarnessError, match="takes CkaOptions"):
        run_analysis("cka", CcaOptions(upstream="fbank", prop="mel", data_root=tmp_path))
    assert Cca().out_path(CcaOptions(upstream="fbank", prop="mel")).name == "cca_mel.csv"
    assert Cka().out_path(CkaOptions(upstream="fbank")).name == "cka.csv"
