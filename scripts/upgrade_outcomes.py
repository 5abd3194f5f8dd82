"""Convert the per-utterance outcomes of a results folder to the compact form.

Records written before the compressed archive keep their outcomes as ``PROBE_seedN.outcomes.json``
(about 8 times larger). Every reader accepts both, so nothing needs converting; this shrinks
an old folder:

    .venv/bin/python scripts/upgrade_outcomes.py results [MORE_FOLDERS ...]

Each JSON file beside a record becomes ``PROBE_seedN.outcomes.npz`` (written atomically), is
read back and compared value for value (NaN equal to NaN), and only then deleted. Running it
again finds nothing to do. Rankings, intervals and leaderboards are unchanged; run
``harness leaderboard`` afterwards to redraw old, larger plots.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.records import (
    JSON_OUTCOMES_SUFFIX,
    Outcomes,
    outcomes_from_bytes,
    outcomes_path,
    write_outcomes,
)


def _same(a: Outcomes, b: Outcomes) -> bool:
    """Equal value for value, a NaN matching a NaN (a collapsed verification score)."""
    def column(x: list, y: list) -> bool:
        return len(x) == len(y) and all(u == v or (u != u and v != v) for u, v in zip(x, y))

    return (a.kind == b.kind and a.ids == b.ids and column(a.numerator, b.numerator)
            and column(a.denominator, b.denominator) and a.extra.keys() == b.extra.keys()
            and all(column(a.extra[k], b.extra[k]) for k in a.extra))


def upgrade(folder: Path) -> tuple[int, int, int]:
    """Convert every JSON outcomes file under ``folder``; return (files, bytes before, bytes after)."""
    files = before = after = 0
    for legacy in sorted(Path(folder).rglob(f"*{JSON_OUTCOMES_SUFFIX}")):
        record = legacy.with_name(legacy.name[: -len(JSON_OUTCOMES_SUFFIX)] + ".json")
        try:
            outcomes = Outcomes.from_json(json.loads(legacy.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise HarnessError(f"{legacy} is not readable outcomes ({exc}); nothing after it was converted") from None
        target = outcomes_path(record)
        write_outcomes(target, outcomes)
        data = target.read_bytes()
        if not _same(outcomes_from_bytes(data), outcomes):
            target.unlink()
            raise HarnessError(f"{target} did not read back equal to {legacy}; the JSON is kept")
        files, before, after = files + 1, before + legacy.stat().st_size, after + len(data)
        legacy.unlink()
    return files, before, after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="results folders (searched recursively)")
    args = parser.parse_args(argv)
    try:
        for folder in args.folders:
            if not folder.is_dir():
                raise HarnessError(f"{folder} is not a directory")
            n, before, after = upgrade(folder)
            print(f"{folder}: {n} outcomes files converted, {before:,} -> {after:,} bytes")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
