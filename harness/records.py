"""The result record: what one probe of one run measured, and on what.

This is the contract between the engine (which writes records) and everything that reads
them (report, leaderboard, trajectory, recommend, benchmark). One record per (upstream,
task, probe, seed) is stored as ``OUT/UPSTREAM/TASK/SETTING/PROBE_seedN.json`` with its
per-utterance :class:`Outcomes` beside it in ``PROBE_seedN.outcomes.npz`` (a compressed NumPy
archive of plain arrays, read with ``allow_pickle=False``; results written before it have
``PROBE_seedN.outcomes.json``, which every reader still accepts).

A record holds two kinds of fields:
- what the numbers depend on (upstream weights, task config, corpus content, seed, steps,
  world size, versions): identical on every machine for the same experiment;
- provenance (``data_root``, ``timing``, ``wall_time_s``, ``peak_rss_mb``): where and how
  fast it ran on this machine. ``data_root`` is written relative to ``$HARNESS_HOME`` when
  the corpus lives there, so the embedded corpus gives the same string everywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

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
        """The upstream's name for layer ``layer`` (an int, or ``weighted`` for a weighted sum)."""
        if isinstance(layer, int) and 0 <= layer < len(self.layer_names):
            return self.layer_names[layer]
        return str(layer)

    def to_json(self) -> dict:
        """The reference as a JSON-able dict."""
        d = asdict(self)
        d["layer_names"] = list(self.layer_names)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "UpstreamRef":
        """Read a reference written by :meth:`to_json` (unknown keys ignored)."""
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
        """Per utterance: correct count and total (1 each by default); the value is sum(correct) / sum(total)."""
        return cls(list(ids), list(correct), list(total) if total is not None else [1] * len(ids), "accuracy", extra)

    @classmethod
    def error_rate(cls, ids: Sequence[str], errors: Sequence[float], lengths: Sequence[float],
                   **extra: list) -> "Outcomes":
        """Per utterance: edit errors and reference length; the value is sum(errors) / sum(lengths) (WER, PER, CER)."""
        return cls(list(ids), list(errors), list(lengths), "error_rate", extra)

    @classmethod
    def verification(cls, ids: Sequence[str], scores: Sequence[float], labels: Sequence[int],
                     **extra: list) -> "Outcomes":
        """Per trial: the score and whether it is a target trial; the value is the EER."""
        return cls(list(ids), [float(v) for v in scores], [int(v) for v in labels], "verification", extra)

    @property
    def value(self) -> float:
        """The metric over every utterance (accuracy, error rate, or EER for verification)."""
        if self.kind == "verification":
            from harness.metrics import equal_error_rate

            return equal_error_rate(self.numerator, self.denominator)
        den = sum(self.denominator)
        return float(sum(self.numerator)) / den if den else 0.0

    def to_json(self) -> dict:
        """The outcomes as a JSON-able dict (the older ``.outcomes.json`` form)."""
        num, den = _OUTCOME_FIELDS[self.kind]
        return {"ids": self.ids, num: self.numerator, den: self.denominator, **self.extra}

    @classmethod
    def from_json(cls, d: dict) -> "Outcomes":
        """Read outcomes written by :meth:`to_json`."""
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
    #: the split model selection scored: "dev", or "test" (SUPERB's ASV choice: reports mark it)
    selection: str = "dev"
    #: the protocol the config was resolved under (superb, quick ...): a name, not identity (the
    #: config is); None in records written before protocols existed
    protocol: str | None = None
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
        """Whether the probe reads one layer (not a weighted sum)."""
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
        """The setting's 10-hex-digit id (hash of :meth:`setting`): the folder its records share."""
        return hashlib.sha256(json.dumps(self.setting(), sort_keys=True, default=str).encode()).hexdigest()[:10]

    @property
    def identity(self) -> tuple:
        """The measurement itself: the same upstream, task, probe, seed and setting."""
        return (json.dumps(self.upstream.to_json(), sort_keys=True), self.task, self.probe, self.seed, self.setting_id)

    def to_json(self) -> dict:
        """The record as a JSON-able dict (what ``PROBE_seedN.json`` holds)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["upstream"] = self.upstream.to_json()
        d["metric"] = asdict(self.metric)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ResultRecord":
        """Read a record written by :meth:`to_json` (fields added later default)."""
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


#: per-utterance outcomes as written now, and as written before (still read)
OUTCOMES_SUFFIX = ".outcomes.npz"
JSON_OUTCOMES_SUFFIX = ".outcomes.json"
#: the per-utterance dev outcomes of the selected state (``PROBE_seedN.dev.outcomes.npz``): what
#: the report decides the best layer on, so the test score is only reported (records written
#: before they existed have none, and their reports decide on test, saying so)
DEV_OUTCOMES_SUFFIX = ".dev.outcomes.npz"
_ARCHIVE_FORMAT = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same outcomes give the same bytes


def outcomes_path(path: Path) -> Path:
    """Where :func:`write_record` stores the outcomes of the record file ``path``
    (``PROBE_seedN.outcomes.npz``); :func:`find_outcomes` also finds older JSON outcomes."""
    return Path(path).with_name(Path(path).name[: -len(".json")] + OUTCOMES_SUFFIX)


def dev_outcomes_path(path: Path) -> Path:
    """Where :func:`write_record` stores the dev outcomes of the record file ``path``."""
    return Path(path).with_name(Path(path).name[: -len(".json")] + DEV_OUTCOMES_SUFFIX)


def read_dev_outcomes(record_file: Path) -> Outcomes | None:
    """The dev outcomes of the record file ``record_file``, or None when it has none (records
    written before they were kept). Raises ValueError (naming the file) when they cannot be read."""
    path = dev_outcomes_path(record_file)
    if not path.is_file():
        return None
    try:
        return outcomes_from_bytes(path.read_bytes())
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read dev outcomes ({exc})") from None


def find_outcomes(path: Path) -> Path | None:
    """The outcomes file of the record file ``path``: the compressed archive, else the JSON
    that results written before it hold; None when it has neither."""
    stem = Path(path).name[: -len(".json")]
    for suffix in (OUTCOMES_SUFFIX, JSON_OUTCOMES_SUFFIX):
        candidate = Path(path).with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _column(values: Sequence) -> np.ndarray | None:
    """A per-utterance list as the narrowest exact array: integers in the smallest integer type
    holding them, floats as float64 (NaN included), booleans as booleans; None when it holds
    anything else (strings, None, nested lists)."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        return None
    if arr.dtype.kind in "iu" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64):
            if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
                return arr.astype(dtype)
    return arr.astype(np.float64) if arr.dtype.kind == "f" else arr


def outcomes_to_bytes(outcomes: Outcomes) -> bytes:
    """The ``.outcomes.npz`` archive of ``outcomes``: plain arrays only (no pickled objects),
    deflate-compressed, byte-identical for identical outcomes. Member ``meta`` is JSON (ASCII,
    as a byte array): the kind, the ids, and the columns in order (numerator, denominator, then
    the ``extra`` lists), each either ``["NAME", "array"]``, stored as member ``columnI``, or
    ``["NAME", "json", VALUES]`` for a list that is not numbers."""
    columns = [("numerator", outcomes.numerator), ("denominator", outcomes.denominator),
               *((f"extra:{k}", v) for k, v in outcomes.extra.items())]
    meta = {"format": _ARCHIVE_FORMAT, "kind": outcomes.kind, "ids": list(outcomes.ids), "columns": []}
    arrays = {}
    for i, (name, values) in enumerate(columns):
        arr = _column(values)
        if arr is None:
            meta["columns"].append([name, "json", list(values)])
        else:
            meta["columns"].append([name, "array"])
            arrays[f"column{i}"] = arr
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode("ascii"), np.uint8), **arrays}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", _ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def outcomes_from_bytes(data: bytes) -> Outcomes:
    """Read an archive written by :func:`outcomes_to_bytes` (``allow_pickle=False``).

    Raises ValueError when ``data`` is not such an archive or its columns disagree in length."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode("ascii"))
            if meta.get("format") != _ARCHIVE_FORMAT:
                raise ValueError(f"outcomes archive format {meta.get('format')!r} is not readable by this harness")
            values = {column[0]: archive[f"column{i}"].tolist() if column[1] == "array" else column[2]
                      for i, column in enumerate(meta["columns"])}
            extra = {name[len("extra:"):]: v for name, v in values.items() if name.startswith("extra:")}
            return Outcomes(meta["ids"], values["numerator"], values["denominator"], meta["kind"], extra)
    except (OSError, KeyError, IndexError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
            UnicodeDecodeError) as exc:
        raise ValueError(f"not an outcomes archive ({type(exc).__name__}: {exc})") from None


def write_outcomes(path: Path, outcomes: Outcomes) -> None:
    """Write ``outcomes`` to ``path`` (an ``.outcomes.npz``) atomically (temporary name, rename)."""
    from harness.fsutil import write_bytes

    write_bytes(path, outcomes_to_bytes(outcomes))


def write_record(out: Path, record: ResultRecord, outcomes: Outcomes, dev_outcomes: Outcomes | None = None) -> Path:
    """Write the (test) outcomes, the dev outcomes when given, then the record (a record on disk
    always has its outcomes); atomic. Outcomes in the older JSON form beside a rewritten record
    are removed."""
    from harness.fsutil import write_json

    path = record_path(out, record)
    write_outcomes(outcomes_path(path), outcomes)
    if dev_outcomes is not None:
        write_outcomes(dev_outcomes_path(path), dev_outcomes)
    path.with_name(path.name[: -len(".json")] + JSON_OUTCOMES_SUFFIX).unlink(missing_ok=True)
    write_json(path, record.to_json())
    return path


def is_record_file(path: Path) -> bool:
    """Whether ``path`` may be a result record (a ``.json`` that is not an outcomes file)."""
    return path.suffix == ".json" and not path.name.endswith(JSON_OUTCOMES_SUFFIX)


def read_record(path: Path) -> ResultRecord | None:
    """The record in ``path``, or None when the JSON is not a result record (e.g. a summary).

    Raises ValueError for a file that is not valid JSON."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS or "task" not in data \
            or "upstream" not in data or "metric" not in data:
        return None
    return ResultRecord.from_json(data)


def read_outcomes(record_file: Path) -> Outcomes:
    """The per-utterance outcomes of the record file ``record_file``, in either form.

    Raises FileNotFoundError when it has none and ValueError (naming the file) when they
    cannot be read."""
    found = find_outcomes(record_file)
    if found is None:
        raise FileNotFoundError(f"{record_file} has no {outcomes_path(record_file).name}")
    try:
        if found.name.endswith(OUTCOMES_SUFFIX):
            return outcomes_from_bytes(found.read_bytes())
        return Outcomes.from_json(json.loads(found.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{found}: {exc}") from None


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
