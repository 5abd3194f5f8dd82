"""What an analysis returns: a table of tidy rows that writes itself as CSV (with the tables
and pictures that go beside it) and formats itself for the terminal."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError
from harness.fsutil import write_text


def to_csv(rows: list[dict]) -> str:
    """Rows (dicts with the same keys, in the first row's order) as CSV text; floats with 6
    significant digits (``%.6g``), ``\\n`` line ends; ``""`` for no rows."""
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def beside(out: Path, suffix: str) -> Path:
    """The file next to ``out`` with ``suffix`` in place of its extension (``""``: ``out``
    itself): ``x.csv`` + ``.summary.csv`` -> ``x.summary.csv``, + ``.png`` -> ``x.png``."""
    return out if not suffix else out.with_name(out.stem + suffix)


@dataclass
class Table:
    """An analysis result.

    ``rows``: one dict per measurement, written as the CSV ``out``. ``companions``: further
    tables written beside it, keyed by suffix (``".summary.csv"``). ``pictures``: suffix ->
    a function drawing a PNG at the path it is given. ``lines``: the terminal view.
    ``listed``: (label, suffix) of the files named after the lines once written (suffix
    ``""``: the CSV). ``failure``: set when the analysis produced no number at all; the
    files are still written, :meth:`format` names none of them and :meth:`check` raises it.
    """

    rows: list[dict]
    companions: dict[str, list[dict]] = field(default_factory=dict)
    pictures: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    listed: list[tuple[str, str]] = field(default_factory=lambda: [("rows", "")])
    failure: str = ""
    written: Path | None = None

    def write(self, out: str | Path) -> Path:
        """Write the CSV at ``out`` (through a temporary name), the companion tables and the
        pictures beside it; return ``out``."""
        out = Path(out)
        write_text(out, to_csv(self.rows))
        for suffix, rows in self.companions.items():
            write_text(beside(out, suffix), to_csv(rows))
        for suffix, draw in self.pictures.items():
            draw(beside(out, suffix))
        self.written = out
        return out

    def format(self) -> str:
        """The terminal view, then (once written, and unless it failed) where the files are."""
        text = list(self.lines)
        if self.written is not None and not self.failure:
            text.append("; ".join(f"{label}: {beside(self.written, suffix)}" for label, suffix in self.listed))
        return "\n".join(text)

    def check(self) -> None:
        """Raise :class:`HarnessError` with :attr:`failure` if the analysis produced no number."""
        if self.failure:
            raise HarnessError(self.failure)
