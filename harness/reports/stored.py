"""Rankings kept by the content they are computed from, so unchanged results are not re-ranked.

Ranking a results folder bootstraps every (upstream, setting) group: about 3 s for the
committed ``results/`` on 2 CPU cores, most of it the EER of resampled ASV trials, and a
second ``harness benchmark`` of finished runs would spend most of its time there. A group's
ranking depends only on the bytes of its records (record, test outcomes, dev outcomes, in the
order given), the number of replicates, the resampled unit, the ranking and record code and
NumPy's version (its generators draw the replicates). :func:`group_key` hashes exactly those,
so a stored ranking is the one :func:`~harness.reports.ranking.rank` returns (a test compares
them on every committed record). Entries live in ``$HARNESS_HOME/rankings/KEY.json``, written
under a unique name and renamed; an unreadable entry is computed again, and a store that
cannot be written (read-only home, full disk) only costs the time.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from harness import records as records_module
from harness.errors import HarnessError
from harness.fsutil import default_home, write_json
from harness.records import UpstreamRef, dev_outcomes_path, find_outcomes
from harness.reports import ranking as ranking_module
from harness.reports.ranking import N_BOOTSTRAP, LayerScore, Ranking, Record, rank

_FORMAT = 1


@lru_cache(maxsize=1)
def _code() -> str:
    """What else a ranking depends on: the ranking and record code and NumPy's version."""
    try:
        source = inspect.getsource(ranking_module) + inspect.getsource(records_module)
    except (OSError, TypeError):  # no source shipped: never reuse across code versions
        source = repr(id(ranking_module))
    return hashlib.sha256(json.dumps([_FORMAT, source, np.__version__]).encode()).hexdigest()


def _file_digest(path: Path | None) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else "-"


def group_key(group: Sequence[Record], n_bootstrap: int, unit: str) -> str | None:
    """A hash of everything the ranking of ``group`` is computed from; None when a record was
    not read from a file (its bytes cannot be hashed, so it is never stored)."""
    h = hashlib.sha256(json.dumps([_code(), n_bootstrap, unit]).encode())
    for r in group:
        path = Path(r.path)
        if not path.is_file():
            return None
        for part in (path, find_outcomes(path), dev_outcomes_path(path)):
            h.update(_file_digest(part).encode())
    return h.hexdigest()


def ranking_to_json(r: Ranking) -> dict:
    """The ranking as JSON (every field; :func:`ranking_from_json` gives it back equal)."""
    def score(s: LayerScore) -> dict:
        weights = None if s.weights is None else [float(w) for w in s.weights]
        return {**s.__dict__, "lrs": list(s.lrs), "weights": weights}

    return {"format": _FORMAT, "upstream": r.upstream.to_json(), "task": r.task, "metric": r.metric,
            "higher_is_better": r.higher_is_better, "setting": r.setting, "setting_info": r.setting_info,
            "layers": [score(s) for s in r.layers], "weighted": [score(s) for s in r.weighted],
            "test_utterances": r.test_utterances, "unit": r.unit, "units": r.units, "clustered": r.clustered,
            "chosen_on": r.chosen_on}


def ranking_from_json(d: dict) -> Ranking:
    """Read :func:`ranking_to_json`'s output; raises KeyError/TypeError/ValueError when malformed."""
    if d.get("format") != _FORMAT:
        raise ValueError("another format")

    def score(s: dict) -> LayerScore:
        return LayerScore(**{**s, "lrs": tuple(s["lrs"])})

    return Ranking(UpstreamRef.from_json(d["upstream"]), d["task"], d["metric"], d["higher_is_better"], d["setting"],
                   d["setting_info"], [score(s) for s in d["layers"]], [score(s) for s in d["weighted"]],
                   d["test_utterances"], d["unit"], d["units"], d["clustered"], d["chosen_on"])


def rank_stored(records: Sequence[Record], n_bootstrap: int = N_BOOTSTRAP, unit: str = "utterance",
                store: Path | None = None) -> list[Ranking]:
    """:func:`~harness.reports.ranking.rank`, group by group, taking each group's ranking from
    ``store`` (default ``$HARNESS_HOME/rankings``) when its inputs are unchanged and keeping the
    ones computed. Same groups, order and values as ``rank(records, n_bootstrap, unit)``."""
    store = Path(store) if store is not None else default_home() / "rankings"
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.upstream.label, r.record.setting_id)].append(r)
    out = []
    for _, group in sorted(groups.items()):
        key = group_key(group, n_bootstrap, unit)
        entry = store / f"{key}.json" if key else None
        if entry is not None:
            try:
                out.append(ranking_from_json(json.loads(entry.read_text())))
                continue
            except (OSError, ValueError, KeyError, TypeError):
                pass
        (ranking,) = rank(group, n_bootstrap, unit)
        if entry is not None:
            try:
                write_json(entry, ranking_to_json(ranking))
            except (OSError, HarnessError):
                pass  # a store that cannot be written only costs the time
        out.append(ranking)
    return out
