"""``harness analyze``: layer-wise analyses, one subcommand per analysis registered in the
``harness.analyses`` entry-point group (its options declared once by the analysis)."""

from __future__ import annotations

import argparse


def _analyze(args: argparse.Namespace) -> int:
    options = args.analysis.parse(args)  # names and checkpoints checked before any heavy import
    from harness.analysis.runner import run_analysis

    table = run_analysis(args.analysis, options)
    print(table.format())
    table.check()
    return 0


def _broken(error: str):
    def handler(args: argparse.Namespace) -> int:
        from harness.errors import HarnessError

        raise HarnessError(error)
    return handler


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the ``harness`` parser."""
    from harness.registry import analysis_names, load_analysis

    an = sub.add_parser("analyze", help="CCA/SVCCA with properties, CKA, neuron- and attention-level similarity",
                        description="Layer-wise analyses through the feature cache; one tidy CSV and one picture per "
                                    "call.")
    asub = an.add_subparsers(dest="measure", metavar="MEASURE")
    for name in analysis_names():
        try:
            analysis = load_analysis(name)
        except Exception as exc:  # a broken plugin costs its own subcommand, not the whole CLI
            error = f"the analysis plugin {name!r} failed to load: {type(exc).__name__}: {exc}"
            asub.add_parser(name, help=f"(failed to load: {exc})".replace("%", "%%")).set_defaults(func=_broken(error))
            continue
        ap = asub.add_parser(name, help=analysis.help.replace("%", "%%"), description=analysis.help)
        analysis.add_arguments(ap)
        ap.set_defaults(func=_analyze, analysis=analysis)
