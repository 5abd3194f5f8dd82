"""The result record: what one probe of one run measured, and on what.

This is the contract between the engine (which writes records) and everything that reads
them (report, leaderboard, trajectory, recommend, benchmark). One record per (upstream,
task, probe, seed) is stored as ``OUT/UPSTREAM/TASK/SETTING/PROBE_seedN.json`` with its
per-utterance :class:`Outcomes` beside it in ``PROBE_seedN.outcomes.json``.

A record holds two kinds of fields:
- what the numbers depend on (upstream weights, task config, corpus content, seed, steps,
  world size, versions): identical on every machine for the same experiment;
- provenance (``data_root``, ``timing``, ``wall_time_s``, ``peak_rss_mb``): where and how
  fast it ran on this machine. ``data_root`` is written relative to ``$HARNESS_HOME`` when
  the corpus lives there, so the embedded corpus gives the same string everywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

#: record format; readers accept every format listed in READABLE_FORMATS
FORMAT = 2
READABLE_FORMATS = (1, 2)
RANDOM_INIT_SUFFIX = " (random init)"
#: outcome kind -> (numerator field, denominator field) in the outcomes JSON
_OUTCOME_FIELDS = {"accuracy": ("correct", "total"), "error_rate": ("errors", "lengths"),
                   "verification": ("scores", "labels")}
OUTCOME_KINDS = tuple(_OUTCOME_FIELDS)


def slug(text: str) -> str:
    """A folder/file-name-safe form of a name (upstream specs contain ':' and '/')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "upstream"


@dataclass(frozen=True)
class MetricSpec:
    """A task's metric and its direction (as torchmetrics declares it)."""

    name: str
    higher_is_better: bool

    def better(self, a: float, b: float) -> bool:
        """Is ``a`` strictly better than ``b``?"""
        return a > b if self.higher_is_better else a < b


@dataclass(frozen=True)
class UpstreamRef:
    """Which model a record measured (the weights hash identifies it; the spec names it)."""

    spec: str
    backend: str = ""
    source: str = ""
    weights_sha256: str | None = None
    random_init: bool = False
    init_seed: int | None = None
    layer_names: tuple[str, ...] = ()
    hop: int | None = None

    @property
    def label(self) -> str:
        """How reports name it: the spec, marked when the weights are random."""
        return self.spec + (RANDOM_INIT_SUFFIX if self.random_init else "")

    @property
    def folder(self) -> str:
        """Its folder name under a results directory."""
        return slug(self.spec + ("_random-init" if self.random_init else ""))

    def layer_name(self, layer: int | str) -> str:
        if isinstance(layer, int) and 0 <= layer < len(self.layer_names):
            return self.layer_names[layer]
        return str(layer)

    def to_json(self) -> dict:
        d = asdict(self)
        d["layer_names"] = list(self.layer_names)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "UpstreamRef":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["layer_names"] = tuple(known.get("layer_names") or ())
        return cls(**known)


@dataclass
class Outcomes:
    """Per-utterance results of one split, in the order of ``ids``: what the bootstrap resamples.

    The split's metric is ``sum(numerator) / sum(denominator)``: for accuracies the correct
    count over the total (1 per utterance, or frames per utterance); for error rates the
    edits over the reference length (SUPERB's corpus-level rate). ``extra`` holds further
    per-utterance lists a task wants kept (e.g. word and character counts for ASR).
    """

    ids: list[str]
    numerator: list[float]
    denominator: list[float]
    kind: str  # "accuracy", "error_rate" or "verification"
    extra: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in OUTCOME_KINDS:
            raise ValueError(f"outcome kind must be one of {', '.join(OUTCOME_KINDS)}, got {self.kind!r}")
        if not len(self.ids) == len(self.numerator) == len(self.denominator):
            raise ValueError(f"outcomes of unequal length: {len(self.ids)} ids, {len(self.numerator)} numerators, "
                             f"{len(self.denominator)} denominators")

    @classmethod
    def accuracy(cls, ids: Sequence[str], correct: Sequence[float], total: Sequence[float] | None = None,
                 **extra: list) -> "Outcomes":
        return cls(list(ids), list(correct), list(total) if total is not None else [1] * len(ids), "accuracy", extra)

    @classmethod
    def error_rate(cls, ids: Sequence[str], errors: Sequence[float], lengths: Sequence[float],
                   **extra: list) -> "Outcomes":
        return cls(list(ids), list(errors), list(lengths), "error_rate", extra)

    @classmethod
    def verification(cls, ids: Sequence[str], scores: Sequence[float], labels: Sequence[int],
                     **extra: list) -> "Outcomes":
        """Per trial: the score and whether it is a target trial; the value is the EER."""
        return cls(list(ids), [float(v) for v in scores], [int(v) for v in labels], "verification", extra)

    @property
    def value(self) -> float:
        if self.kind == "verification":
            from harness.metrics import equal_error_rate

            return equal_error_rate(self.numerator, self.denominator)
        den = sum(self.denominator)
        return float(sum(self.numerator)) / den if den else 0.0

    def to_json(self) -> dict:
        num, den = _OUTCOME_FIELDS[self.kind]
        return {"ids": self.ids, num: self.numerator, den: self.denominator, **self.extra}

    @classmethod
    def from_json(cls, d: dict) -> "Outcomes":
        for kind, (num, den) in _OUTCOME_FIELDS.items():
            if num in d:
                break
        else:
            raise ValueError("outcomes hold neither correct/total, errors/lengths nor scores/labels")
        extra = {k: v for k, v in d.items() if k not in ("ids", num, den)}
        return cls(list(d["ids"]), list(d[num]), list(d.get(den) or [1] * len(d["ids"])), kind, extra)


@dataclass
class ResultRecord:
    """One probe's result (see the module docstring for which fields are identity)."""

    upstream: UpstreamRef
    task: str
    metric: MetricSpec
    probe: str  # "layer_3", "weighted", "weighted_1-4"
    layer: int | str  # the layer index, or "weighted"
    layers: list[int]
    layer_weights: list[float] | None  # learned softmax weights of a weighted probe
    dev: dict[str, float]
    test: dict[str, float]
    best_step: int
    steps: int
    seed: int
    config: dict
    corpus: dict
    run_key: str
    test_utterances: int
    versions: dict
    dev_curve: list[dict] = field(default_factory=list)  # dev metrics of every validation pass
    no_cache: bool = False  # features streamed from the upstream inside each step
    pooled_cache: bool = False  # utterance means cached instead of frames
    world_size: int = 1  # training processes; the batch size is global (split over them)
    dropped_utterances: dict = field(default_factory=dict)
    #: learning-rate grid runs (config ``lr_grid``): the rate of the grid point that dev chose,
    #: whose numbers the record holds; None without a grid (config ``lr`` was used)
    lr: float | None = None
    #: every grid point, ascending rate: ``{"lr", "best_step", "best_dev", "dev_curve"}`` (its dev
    #: metric at every validation); [] without a grid
    grid: list[dict] = field(default_factory=list)
    #: several head seeds trained in one pass (``--seeds``): the seed of their shared batch order;
    #: ``seed`` then varies the head initialisation only. None: ``seed`` set both
    batch_seed: int | None = None
    # provenance (not identity)
    data_root: str | None = None
    wall_time_s: float | None = None
    timing: dict = field(default_factory=dict)
    peak_rss_mb: float | None = None
    #: the machine facts the numbers depend on (:func:`harness.probing.provenance.machine_fingerprint`)
    machine: dict = field(default_factory=dict)
    format: int = FORMAT

    @property
    def score(self) -> float:
        """The test value of the task's metric."""
        return float(self.test[self.metric.name])

    @property
    def is_single_layer(self) -> bool:
        return isinstance(self.layer, int)

    def setting(self) -> dict:
        """What a number was measured on: task, corpus, task config, steps, harness version.

        Records with the same setting are comparable and share a leaderboard table. A world
        size of 1 is left out so that single-process settings keep their ids. A learning-rate
        grid is part of the config; the batch seed of head seeds trained in one pass is added."""
        out = {"task": self.task, "corpus": self.corpus, "config": self.config,
               "harness": self.versions.get("harness"), "steps": self.steps}
        if self.world_size != 1:
            out["world_size"] = self.world_size
        if self.batch_seed is not None:  # seeds of one pass: comparable among themselves only
            out["batch_seed"] = self.batch_seed
        return out

    @property
    def setting_id(self) -> str:
        return hashlib.sha256(json.dumps(self.setting(), sort_keys=True, default=str).encode()).hexdigest()[:10]

    @property
    def identity(self) -> tuple:
        """The measurement itself: the same upstream, task, probe, seed and setting."""
        return (json.dumps(self.upstream.to_json(), sort_keys=True), self.task, self.probe, self.seed, self.setting_id)

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["upstream"] = self.upstream.to_json()
        d["metric"] = asdict(self.metric)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ResultRecord":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["upstream"] = UpstreamRef.from_json(d["upstream"])
        known["metric"] = MetricSpec(**d["metric"])
        known.setdefault("run_key", "")
        known.setdefault("versions", {})
        known.setdefault("corpus", {})
        known.setdefault("test_utterances", 0)
        known.setdefault("best_step", 0)
        known.setdefault("layers", [])
        known.setdefault("layer_weights", None)
        known.setdefault("dev", {})
        return cls(**known)


# ------------------------------------------------------------------------ files


def record_path(out: Path, record: ResultRecord) -> Path:
    """``OUT/UPSTREAM/TASK/SETTING/PROBE_seedN.json``."""
    return Path(out) / record.upstream.folder / record.task / record.setting_id / f"{record.probe}_seed{record.seed}.json"


def outcomes_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name[: -len(".json")] + ".outcomes.json")


def write_record(out: Path, record: ResultRecord, outcomes: Outcomes) -> Path:
    """Write outcomes then the record (a record on disk always has its outcomes); atomic."""
    from harness.fsutil import write_json

    path = record_path(out, record)
    write_json(outcomes_path(path), outcomes.to_json())
    write_json(path, record.to_json())
    return path


def is_record_file(path: Path) -> bool:
    return path.suffix == ".json" and not path.name.endswith(".outcomes.json")


def read_record(path: Path) -> ResultRecord | None:
    """The record in ``path``, or None when the JSON is not a result record (e.g. a summary).

    Raises ValueError for a file that is not valid JSON."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS or "task" not in data \
            or "upstream" not in data or "metric" not in data:
        return None
    return ResultRecord.from_json(data)


def read_outcomes(record_file: Path) -> Outcomes:
    return Outcomes.from_json(json.loads(outcomes_path(record_file).read_text()))


def portable_root(path: Path) -> str:
    """``path`` relative to ``$HARNESS_HOME`` when it lies inside it (the same string on every
    machine for the embedded corpus), else the path as an absolute string."""
    from harness.fsutil import default_home

    for p, home in ((Path(path).absolute(), default_home().absolute()),
                    (Path(path).resolve(), default_home().resolve())):
        try:
            return "$HARNESS_HOME/" + p.relative_to(home).as_posix()
        except ValueError:
            continue
    return str(Path(path).resolve())


def format_records(paths: list[Path]) -> str:
    """One line per record of a run: probe (and head seed, with ``--seeds``), dev and test metric,
    the chosen learning rate (with a grid), learned layer weights."""
    records = [read_record(p) for p in paths]
    seeds = len({r.seed for r in records}) > 1
    lr = any(r.lr is not None for r in records)
    lines = [f"{'probe':<14}" + (f"{'seed':>6}" if seeds else "") + f"{'dev':>10}{'test':>10}"
             + (f"{'lr':>9}" if lr else "") + f"  metric   (records in {paths[0].parent})"]
    for r in records:
        name = r.metric.name
        lines.append(f"{r.probe:<14}" + (f"{r.seed:>6}" if seeds else "") + f"{r.dev[name]:>10.4f}{r.test[name]:>10.4f}"
                     + (f"{r.lr:>9g}" if lr else "") + f"  {name}"
                     + ("  weights " + " ".join(f"{w:.2f}" for w in r.layer_weights) if r.layer_weights else ""))
    return "\n".join(lines)
