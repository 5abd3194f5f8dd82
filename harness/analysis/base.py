"""The analysis contract: what a layer-wise analysis declares, receives and returns.

An analysis is a class registered in the ``harness.analyses`` entry-point group (the core's
are in ``setup.cfg``; another package adds its own in its ``pyproject.toml``). It declares

- ``name`` (the ``harness analyze NAME`` subcommand and the default output's stem) and
  ``help`` (one line of plain text);
- ``options``: a frozen dataclass whose fields are its arguments, declared once with
  :func:`option` (flag, type, help); the command line is built from it, and a library
  caller fills it directly. :class:`AnalysisOptions` holds the fields every analysis takes;
- ``run(inputs, options)``: the computation on what the shared loader supplies
  (:class:`harness.analysis.inputs.Inputs`: per-layer frames of a model, frames of two
  models paired by time, property samples, attention maps), returning a
  :class:`harness.analysis.tables.Table` that writes its CSV and pictures and formats
  itself for the terminal.

:func:`harness.analysis.runner.run_analysis` runs one: inputs, ``run``, ``write``. This
module and the ones declaring analyses are imported when the ``harness`` parser is built,
so they import only the standard library and light harness modules (no numpy, no torch).
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from harness.registry import parse_spec

if TYPE_CHECKING:  # annotations only: the computation's modules are heavy
    from harness.analysis.inputs import Inputs
    from harness.analysis.tables import Table


@dataclass(frozen=True)
class Option:
    """How a field of an options dataclass appears on the command line: its flags
    (default ``--field-name``), ``argparse.add_argument`` keywords, and ``convert`` applied
    to the parsed value before the options are built (e.g. globs -> checkpoint specs)."""

    flags: tuple[str, ...]
    kwargs: dict
    convert: Callable[[Any], Any] | None = None


def option(default: Any = MISSING, *flags: str, help: str | None = None, convert: Callable | None = None,
           **kwargs: Any) -> Any:
    """A dataclass field that is also a command-line argument.

    ``default``: the field's default (argparse's too); without one the argument is required.
    ``flags``: e.g. ``"--property"`` when the field has another name; ``help``: plain text (a
    literal ``%`` is fine); ``kwargs``: ``type``, ``choices``, ``nargs``, ``action``,
    ``metavar`` as for ``argparse.add_argument``. A bool field with default False becomes a
    ``store_true`` switch; ``nargs`` values arrive as tuples."""
    if default is False and "action" not in kwargs:
        kwargs["action"] = "store_true"
    meta = {"cli": Option(tuple(flags), {"help": help, **kwargs}, convert)}
    if default is MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def add_options(parser: argparse.ArgumentParser, options: type) -> None:
    """Add every :func:`option` field of the dataclass ``options`` to ``parser``, in field order."""
    for f in dataclasses.fields(options):
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        kwargs = dict(cli.kwargs)
        if kwargs.get("help"):
            kwargs["help"] = kwargs["help"].replace("%", "%%")  # argparse %-formats help strings
        if f.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        parser.add_argument(*(cli.flags or ("--" + f.name.replace("_", "-"),)), dest=f.name, **kwargs)


def options_from(options: type, namespace: argparse.Namespace) -> Any:
    """The options dataclass filled from parsed arguments (lists become tuples)."""
    values = {}
    for f in dataclasses.fields(options):
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        value = getattr(namespace, f.name)
        if isinstance(value, list):
            value = tuple(value)
        if cli.convert is not None and value is not None:
            value = cli.convert(value)
        values[f.name] = value
    return options(**values)


@dataclass(frozen=True, kw_only=True)
class AnalysisOptions:
    """What every analysis takes: the model, the utterances, the output and the seed.
    Every model name is checked (registry name or ``BACKEND:SOURCE``) when built."""

    upstream: str | None = option(None, help="registry name or BACKEND:SOURCE")
    data_root: str | Path | None = option(None, help="corpus root with LibriSpeech alignments (default: embedded corpus)")
    split: str = option("dev", help="LibriSpeech split (default dev)")
    limit: int | None = option(None, type=int, help="use only the first N utterances")
    random_init: bool = option(False, help="the upstream's architecture with random weights")
    seed: int = option(0, type=int, help="seed of every random draw (default 0)")
    out: str | Path | None = option(None, help="tidy CSV (a PNG is written next to it)")
    quiet: bool = option(False, help="no progress bars")
    max_samples: int = option(20000, type=int, help="frames/segments kept (default 20000)")

    def __post_init__(self) -> None:
        for spec in self.models():
            parse_spec(spec)

    def models(self) -> list[str]:
        """The model names these options refer to."""
        return [self.upstream] if self.upstream else []

    @property
    def progress(self) -> bool:
        """Whether to show progress bars (not ``quiet``)."""
        return not self.quiet


class Analysis(abc.ABC):
    """A layer-wise analysis (see the module docstring); registered by entry point."""

    name: ClassVar[str]
    help: ClassVar[str]
    options: ClassVar[type[AnalysisOptions]] = AnalysisOptions

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the analysis's options to its ``harness analyze NAME`` parser."""
        add_options(parser, cls.options)

    @classmethod
    def parse(cls, namespace: argparse.Namespace) -> AnalysisOptions:
        """The options from parsed arguments; raises :class:`HarnessError` on bad values."""
        return options_from(cls.options, namespace)

    def out_path(self, options: AnalysisOptions) -> Path:
        """``--out``, or ``NAME.csv`` / ``NAME_PROPERTY.csv`` in the working folder."""
        prop = getattr(options, "prop", None)
        return Path(options.out or f"{self.name}{'_' + prop if prop else ''}.csv")

    @abc.abstractmethod
    def run(self, inputs: Inputs, options: AnalysisOptions) -> Table:
        """Compute the analysis from ``inputs`` and return its table (not yet written)."""
