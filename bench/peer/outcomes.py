"""Per-utterance (per-trial for ASV) outcomes from the records each s3prl expert's ``forward`` fills.

Each outcome carries s3prl's own utterance name (``name``) and the harness-style id (``id``) where
the two differ, so the lead can join them with the harness's outcomes and bootstrap both:
- PR: ``errors`` and ``length`` in phones, exactly as ``ctc/metric.py``'s ``wer`` counts them
  (``split(' ')`` on both strings), so sum(errors) / sum(length) is the logged PER;
- ASR: word ``errors`` and ``length`` as ``asr/expert.py``'s ``_compute_metrics`` counts them;
- IC, SID, KS, ER: ``correct`` (0/1), ``predicted`` and ``truth``;
- ASV: one outcome per trial: ``label`` (1 = same speaker), cosine ``score``, the two utterances.
"""

from __future__ import annotations

from pathlib import Path

import editdistance


def _text_errors(name, hyp, ref):
    return {"id": name, "errors": int(editdistance.eval(hyp, ref)), "length": len(ref)}


def _ctc(records, expert):
    return [dict(_text_errors(f, h.split(" "), r.split(" ")), hypothesis=h, reference=r)
            for f, h, r in zip(records["filename"], records["hypothesis"], records["groundtruth"])]


def _asr(records, expert):
    return [dict(_text_errors(f, p, t), hypothesis=" ".join(p), reference=" ".join(t))
            for f, p, t in zip(records["filenames"], records["pred_words"], records["target_words"])]


def _classes(predict_key, truth_key, to_id=lambda name: name):
    def extract(records, expert):
        return [{"id": to_id(f), "name": f, "correct": int(a), "predicted": _plain(p), "truth": _plain(t)}
                for f, a, p, t in zip(records["filename"], records["acc"], records[predict_key], records[truth_key])]
    return extract


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _vox_id(name: str) -> str:
    # s3prl: "id10001-VIDEO-00001" -> the iden_split path "id10001/VIDEO/00001.wav"
    speaker, video, n = name.split("-", 1)[0], name.split("-", 1)[1].rsplit("-", 1)[0], name.rsplit("-", 1)[1]
    return f"{speaker}/{video}/{n}"


def _ks_id(name: str) -> str:
    # s3prl: "<class folder>-<file>.wav"; the fallback test view names other words "<word>_<file>" under _unknown_
    folder, _, file = name.removesuffix(".wav").partition("-")
    if folder == "_unknown_" and "_nohash_" in file.partition("_")[2]:
        folder, _, file = file.partition("_")
    return f"{folder}/{file}"


def _fsc_id(name: str) -> str:
    # s3prl: the file stem "<speakerId>-NNNN"; harness: "wavs/speakers/<speakerId>/<stem>"
    return f"wavs/speakers/{name.rsplit('-', 1)[0]}/{name}"


def _asv(records, expert):
    def utt(path):
        return "/".join(Path(path).parts[-3:]).removesuffix(".wav")

    pairs = expert.test_dataset.pair_table
    return [{"label": int(label), "score": float(score), "enrol": utt(a), "test": utt(b)}
            for (label, a, b), score in zip(pairs, records["scores"])]


EXTRACT = {
    "ctc": _ctc,
    "asr": _asr,
    "fluent_commands": _classes("predict", "truth", _fsc_id),
    "voxceleb1": _classes("predict_speaker", "truth_speaker", _vox_id),
    "speech_commands": _classes("predict", "truth", _ks_id),
    "emotion": _classes("predict", "truth"),
    "sv_voxceleb1": _asv,
}


def outcomes(folder: str, records, expert) -> list[dict]:
    return EXTRACT[folder](records, expert)


def interval(record: dict, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the test metric over the test outcomes (ASV: over trials).

    Accuracy: mean of ``correct``; PER/WER: sum(errors) / sum(length); EER: s3prl's ``EER`` on the
    resampled trials. None when the record has no outcomes.
    """
    import numpy as np

    rows = record.get("test_outcomes") or []
    if not rows:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(rows), size=(resamples, len(rows)))
    if "correct" in rows[0]:
        correct = np.array([r["correct"] for r in rows], dtype=float)
        values = correct[picks].mean(axis=1)
    elif "errors" in rows[0]:
        errors = np.array([r["errors"] for r in rows], dtype=float)
        lengths = np.array([r["length"] for r in rows], dtype=float)
        values = errors[picks].sum(axis=1) / lengths[picks].sum(axis=1)
    else:
        from s3prl.downstream.sv_voxceleb1.utils import EER

        labels = np.array([r["label"] for r in rows], dtype=int)
        scores = np.array([r["score"] for r in rows], dtype=float)
        values = np.array([EER(labels[p], scores[p])[0] for p in picks if 0 < labels[p].sum() < len(p)])
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))
