"""Run one analysis: the shared inputs, its computation, its files."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.base import Analysis, AnalysisOptions
from harness.analysis.inputs import Inputs
from harness.analysis.tables import Table
from harness.corpus.layout import require_embedded_corpus
from harness.errors import HarnessError
from harness.registry import load_analysis


def run_analysis(analysis: str | type[Analysis] | Analysis, options: AnalysisOptions) -> Table:
    """Run ``analysis`` (a registered name, or the class) with ``options`` (its options
    dataclass) on the utterances they name (``data_root``, default the embedded corpus;
    ``split``; ``limit``), write its CSV and pictures at ``options.out`` (default
    ``NAME[_PROPERTY].csv``) and return the written table. Raises :class:`HarnessError` for
    an unknown analysis, options of another analysis, or a corpus that is not built."""
    if isinstance(analysis, str):
        analysis = load_analysis(analysis)
    if isinstance(analysis, type):
        analysis = analysis()
    if not isinstance(options, analysis.options):
        raise HarnessError(f"analysis {analysis.name!r} takes {analysis.options.__name__}, "
                           f"not {type(options).__name__}")
    data_root = Path(options.data_root) if options.data_root else require_embedded_corpus()
    inputs = Inputs(data_root, options.split, options.limit, options.progress)
    table = analysis.run(inputs, options)
    table.write(analysis.out_path(options))
    return table
