"""Automatic speaker verification on VoxCeleb1 (SUPERB ASV): an x-vector head trained with an
additive-margin softmax on the training speakers; utterance embeddings scored by cosine
similarity on the trial list; equal error rate (lower is better) and minDCF (p_target 0.01).

Trial list: ``veri_test2.txt`` when the VoxCeleb1 root has it (VoxCeleb1's cleaned list, the
one SUPERB scores; in the embedded corpus it holds only utterances no shipped model was
pretrained on: iden_split codes 2 and 3, each unordered pair once), else ``veri_test.txt``.

Speakers: the trial list's speakers are the test set and never trained on; of the other
speakers, the last ``dev_speakers`` (by id) are held out for model selection on dev trials
built the same way (half target, cross-session); the rest train. The bootstrap intervals
resample trials.

Under ``superb`` (``asv.superb.yaml``, s3prl 0.4.18 ``downstream/sv_voxceleb1``): s3prl's head
(``head.style: superb``, :class:`harness.heads.SuperbXVectorHead`), AM-softmax m 0.4, AdamW,
training utterances of at most ``min_train_seconds`` (2 s) dropped (counted in ``dropped``;
s3prl measures the length after sox's silence trimming, this reads the file's length) and
random ``crop_seconds`` (8 s) crops of the rest. ``selection``: ``dev`` (default) picks each
probe's checkpoint on the dev trials; ``test`` reproduces SUPERB's choice (every checkpoint
scored on the test trials, the best test EER reported; recorded in the record's
``selection``, so reports can mark it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from harness.tasks.families import training_crop

from harness.audio import SAMPLE_RATE
from harness.config import Field
from harness.data import read_voxceleb1_all, read_voxceleb1_trials
from harness.data.voxceleb import trial_list_name
from harness.errors import HarnessError
from harness.heads import SuperbXVectorHead, XVectorHead
from harness.metrics import equal_error_rate, min_dcf
from harness.task import (
    BASE_OPTIONAL,
    BASE_SCHEMA,
    Example,
    LabelMap,
    MetricSpec,
    Outcomes,
    Task,
    require_examples,
)


def unique_pairs(trials: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Each unordered pair once (the first occurrence): cosine scoring is symmetric, so a pair
    listed in both orders (155 of veri_test.txt's 2,000 trials) would count twice."""
    seen, out = set(), []
    for a, b, label in trials:
        key = (a, b) if a <= b else (b, a)
        if key not in seen:
            seen.add(key)
            out.append((a, b, label))
    return out


class SpeakerVerification(Task):
    """SUPERB ASV: an x-vector head trained with AM-softmax on training speakers, cosine-scored trials, EER."""
    name = "asv"
    level = "utterance"
    dataset = "voxceleb1"
    metric = MetricSpec("eer", higher_is_better=False)
    config_schema = {**BASE_SCHEMA, "dev_speakers": Field(int, minimum=2), "dev_trials": Field(int, minimum=10),
                     "head.channels": Field(int, minimum=1), "head.embedding": Field(int, minimum=1),
                     "head.margin": Field(float, minimum=0, maximum=1), "head.scale": Field(float, above=0),
                     "head.style": Field(str, choices=("compact", "superb")),
                     "head.pooled": Field(int, minimum=1, nullable=True),
                     "crop_seconds": Field(float, above=0, nullable=True), "min_train_seconds": Field(float, minimum=0)}
    optional_config = {**BASE_OPTIONAL, "head.style": "compact", "head.pooled": None, "crop_seconds": None,
                       "min_train_seconds": 0.0}

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.trials: dict[str, list[tuple[str, str, int]]] = {}
        self._split_of: dict[str, str] = {}

    def examples(self, data_root: Path, split: str) -> list[Example]:
        utts = read_voxceleb1_all(data_root)
        test_trials = read_voxceleb1_trials(data_root, trial_list_name(data_root))
        test_ids = {t.enrol for t in test_trials} | {t.test for t in test_trials}
        test_speakers = {i.split("/")[0] for i in test_ids}
        others = sorted({u.speaker for u in utts} - test_speakers)
        k = int(self.config["dev_speakers"])
        if len(others) <= k:
            raise HarnessError(f"VoxCeleb1 under {data_root}: {len(others)} speakers outside the trial list, need more "
                               f"than dev_speakers={k} to train on")
        dev_speakers = set(others[-k:])
        if split == "test":
            self.trials["test"] = unique_pairs([(t.enrol, t.test, int(t.target)) for t in test_trials])
            chosen = [u for u in utts if u.id in test_ids]
        elif split == "dev":
            chosen = [u for u in utts if u.speaker in dev_speakers]
            self.trials["dev"] = self._dev_trials(chosen)
        else:
            chosen = [u for u in utts if u.speaker not in dev_speakers and u.speaker not in test_speakers]
            chosen = self._long_enough(chosen)
        for u in chosen:
            self._split_of[u.id] = split
        crop = training_crop(self.config, split)
        return require_examples([Example(u.id, u.path, (u.speaker,), crop=crop) for u in chosen], f"VoxCeleb1 {split}",
                                data_root)

    def _long_enough(self, utts: list) -> list:
        """Training utterances longer than ``min_train_seconds`` (s3prl keeps ``length > min_sec``);
        the number dropped goes to ``self.dropped["train"]``."""
        limit = float(self.option("min_train_seconds") or 0.0) * SAMPLE_RATE
        if limit <= 0:
            return utts
        kept = [u for u in utts if int(sf.info(str(u.path)).frames) > limit]
        self.dropped["train"] = len(utts) - len(kept)
        return kept

    def identity(self) -> dict:
        """The trial lists scored (a sha256 of the pairs and labels): another list over the same
        utterances is another experiment."""
        text = "\n".join(f"{split}\t{a}\t{b}\t{label}" for split in sorted(self.trials)
                         for a, b, label in self.trials[split])
        return {"trials_sha256": hashlib.sha256(text.encode()).hexdigest()} if self.trials else {}

    def _dev_trials(self, utts) -> list[tuple[str, str, int]]:
        """Half target (same speaker, another session), half non-target, drawn with a fixed seed."""
        rng = np.random.default_rng(20240)
        by_speaker: dict[str, list] = {}
        for u in utts:
            by_speaker.setdefault(u.speaker, []).append(u)
        items = [(u.speaker, u.id, u.id.split("/")[1]) for u in utts]
        out: set[tuple[str, str, int]] = set()
        want = int(self.config["dev_trials"])
        for _ in range(want * 20):
            if len(out) >= want:
                break
            a = items[int(rng.integers(len(items)))]
            target = len(out) % 2 == 0
            pool = [b for b in items if (b[0] == a[0]) == target and b[2] != a[2]]
            if pool:
                b = pool[int(rng.integers(len(pool)))]
                out.add((a[1], b[1], int(target)))
        return sorted(out)

    def prepare(self, train: list[Example]) -> None:
        self.speakers = LabelMap(e.target[0] for e in train)

    def build_head(self, dim: int):
        h = self.config["head"]
        if self.option("head.style") == "superb":
            return SuperbXVectorHead(dim, len(self.speakers), channels=int(h["channels"]),
                                     pooled=int(self.option("head.pooled") or 1500), embedding=int(h["embedding"]))
        return XVectorHead(dim, len(self.speakers), channels=int(h["channels"]), embedding=int(h["embedding"]))

    def batch_targets(self, examples, frames, hop, offset=0):
        return {"targets": torch.tensor([self.speakers.encode(e.target[0]) for e in examples], dtype=torch.long)}

    def loss(self, output, batch):
        """AM-softmax: cross-entropy of ``scale * (cos - margin * one_hot(speaker))``."""
        _, cos = output
        y = batch["targets"]
        h = self.config["head"]
        onehot = F.one_hot(y.clamp(min=0), cos.shape[1]).to(cos.dtype) * (y >= 0)[:, None]
        return F.cross_entropy(float(h["scale"]) * (cos - float(h["margin"]) * onehot), y, ignore_index=-1)

    def predict(self, output, batch):
        emb, _ = output
        return list(F.normalize(emb.float(), dim=1).cpu().numpy())

    def score(self, predictions, examples):
        split = self._split_of.get(examples[0].id) if examples else None
        trials = self.trials.get(split or "")
        if not trials:
            raise HarnessError("speaker verification scored examples that belong to no trial list")
        # a trial whose utterance was left out (e.g. shorter than the upstream's shortest input) is not scored
        trials = [t for t in trials if t[0] in predictions and t[1] in predictions]
        scores = [float(np.dot(predictions[a], predictions[b])) for a, b, _ in trials]
        labels = [label for _, _, label in trials]
        bad = sum(not np.isfinite(v) for v in scores)
        if bad:
            raise HarnessError(f"speaker verification: {bad} of {len(scores)} trial scores are not finite (the "
                               "probe's embeddings diverged); lower the learning rate or check the features")
        ids = [f"{a}|{b}" for a, b, _ in trials]
        metrics = {"eer": equal_error_rate(scores, labels), "min_dcf": min_dcf(scores, labels)}
        return metrics, Outcomes.verification(ids, scores, labels)
