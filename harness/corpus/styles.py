"""The IEMOCAP-layout corpus: speaking styles (prosody recipes), not emotions."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.audio import SAMPLE_RATE
from harness.corpus.draws import channel as draw_channel
from harness.corpus.draws import jitter as draw_jitter
from harness.corpus.layout import IEMOCAP_DIR
from harness.fsutil import write_text

#: speaking styles of the IEMOCAP-layout corpus: prosody only (the text is drawn the same way
#: for every style), so a classifier can only use rate, pitch level and range, and loudness.
#: 'exc' (excited) is merged into 'hap' by SUPERB ER; 'fru' is a label SUPERB ER leaves out.
EMO_STYLES = {
    "neu": {"rate": 0, "pitch": 0, "range": 0, "volume": 100},
    "hap": {"rate": 18, "pitch": 14, "range": 30, "volume": 125},
    "exc": {"rate": 28, "pitch": 20, "range": 40, "volume": 140},
    "sad": {"rate": -40, "pitch": -12, "range": -30, "volume": 65},
    "ang": {"rate": 12, "pitch": 4, "range": 12, "volume": 175},
    "fru": {"rate": 5, "pitch": -4, "range": -10, "volume": 120},
}
EMO_VAD = {"neu": (2.5, 2.5, 2.5), "hap": (4.0, 3.5, 3.0), "exc": (4.0, 4.0, 3.0), "sad": (1.5, 2.0, 2.0),
           "ang": (1.5, 4.0, 4.0), "fru": (2.0, 3.5, 3.0)}  # valence, activation, dominance (1-5)


def iemocap_jobs(profile, speakers: list, rng: np.random.Generator, sentence_candidates) -> list[dict]:
    """IEMOCAP layout: sessions of a female and a male speaker, every style from each speaker."""
    women = [s.index for s in speakers if s.gender == "f"]
    men = [s.index for s in speakers if s.gender == "m"]
    women = [women[int(i)] for i in rng.permutation(len(women))]
    men = [men[int(i)] for i in rng.permutation(len(men))]
    jobs = []
    for session in range(1, profile.emo_sessions + 1):
        pair = {"F": women[(session - 1) % len(women)], "M": men[(session - 1) % len(men)]}
        for letter, spk in pair.items():
            dialog = f"Ses{session:02d}{letter}_impro01"
            channel = draw_channel(rng)
            styles = [style for style in EMO_STYLES for _ in range(profile.emo_utts_per_class)
                      if style not in ("exc", "fru")]
            styles += ["exc"] * max(1, profile.emo_utts_per_class // 3) + ["fru"] * max(1, profile.emo_utts_per_class // 4)
            styles = [styles[int(i)] for i in rng.permutation(len(styles))]
            for n, style in enumerate(styles):
                utt = f"{dialog}_{letter}{n:03d}"
                jobs.append({
                    "corpus": "iemocap", "split": session, "utt": utt, "speaker": spk, "dialog": dialog,
                    "path": f"{IEMOCAP_DIR}/Session{session}/sentences/wav/{dialog}/{utt}.wav",
                    "texts": sentence_candidates(rng), "jitter": draw_jitter(rng), "channel": channel,
                    "noise_seed": int(rng.integers(2**31)), "format": "WAV", "emotion": style,
                    "prosody": EMO_STYLES[style],
                })
    return jobs


def write_emo_evaluation(folder: Path, jobs: list[dict], records: dict[str, dict]) -> None:
    """One ``SessionN/dialog/EmoEvaluation/DIALOG.txt`` per dialog, IEMOCAP's lines
    ``[start - end]<TAB>utterance<TAB>label<TAB>[v, a, d]`` (turns 0.5 s apart)."""
    by_dialog: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for job in jobs:
        by_dialog[(job["split"], job["dialog"])].append(job)
    for (session, dialog), items in sorted(by_dialog.items()):
        lines, t = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""], 0.0
        for job in sorted(items, key=lambda j: j["utt"]):
            dur = records[job["utt"]]["samples"] / SAMPLE_RATE
            vad = EMO_VAD[job["emotion"]]
            lines.append(f"[{t:.4f} - {t + dur:.4f}]\t{job['utt']}\t{job['emotion']}\t"
                         f"[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]")
            t += dur + 0.5
        write_text(folder / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt",
                   "\n".join(lines) + "\n")
