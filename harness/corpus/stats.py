"""Corpus statistics: hours, utterances, speakers, phones and words per layout and split (in
``corpus.json``, printed by ``harness corpus build`` and ``harness corpus info``)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.audio import SAMPLE_RATE
from harness.corpus.align import SILENCE
from harness.errors import HarnessError

#: key of ``statistics`` holding the list-file layouts' counts (trials, lexicon entries ...)
LISTS = "lists"


def corpus_statistics(jobs: list[dict], records: dict[str, dict]) -> dict:
    """Hours, utterances, speakers, phones, words per corpus and split."""
    stats: dict[str, dict] = {}
    for job in jobs:
        rec = records[job["utt"]]
        key = stats.setdefault(job["corpus"], {}).setdefault(str(job["split"]), {
            "hours": 0.0, "utterances": 0, "speakers": set(), "phone_tokens": 0, "phone_types": set(),
            "word_tokens": 0, "word_types": set()})
        key["hours"] += rec["samples"] / SAMPLE_RATE / 3600
        key["utterances"] += 1
        key["speakers"].add(job["speaker"])
        speech = [p[0] for p in rec["phones"] if p[0] != SILENCE]
        key["phone_tokens"] += len(speech)
        key["phone_types"].update(speech)
        key["word_tokens"] += len(rec["words"])
        key["word_types"].update(w[0] for w in rec["words"])
    for corpus in stats.values():
        for s in corpus.values():
            s["hours"] = round(s["hours"], 4)
            for k in ("speakers", "phone_types", "word_types"):
                s[k] = len(s[k])
    return stats


def format_statistics(stats: dict) -> str:
    """The audio table, then one line per list-file layout (``key value`` counts)."""
    lines = [f"{'corpus':<21}{'split':<16}{'hours':>7}{'utts':>7}{'spk':>5}{'phones':>8}{'ph.types':>9}{'words':>7}"
             f"{'w.types':>8}"]
    for corpus in sorted(set(stats) - {LISTS}):
        for split in sorted(stats[corpus]):
            s = stats[corpus][split]
            lines.append(f"{corpus:<21}{split:<16}{s['hours']:>7.3f}{s['utterances']:>7}{s['speakers']:>5}"
                         f"{s['phone_tokens']:>8}{s['phone_types']:>9}{s['word_tokens']:>7}{s['word_types']:>8}")
    for layout, counts in sorted(stats.get(LISTS, {}).items()):
        lines.append(f"{layout:<21}" + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items()))
    return "\n".join(lines)


def describe_built(out, meta: dict) -> str:
    """What ``harness corpus build`` prints: where, profile, seed, speakers, phone labels, the
    build time (or that it was already built) and the statistics table."""
    took = meta.get("build_seconds")
    return (f"corpus: {out}  (profile {meta['profile']}, seed {meta['seed']}, {len(meta['speakers'])} speakers, "
            f"{len(meta['phone_inventory'])} phone labels"
            + (f", built in {took:.1f} s" if took is not None else ", already built") + ")\n"
            + format_statistics(meta["statistics"]))


def describe_corpus(root, speakers: bool = False) -> str:
    """What ``harness corpus info`` prints for the corpus at ``root``: its statistics, or (with
    ``speakers``) every speaker's recipe. HarnessError when ``root`` is not a built corpus."""
    meta_path = Path(root) / "corpus.json"
    if not meta_path.exists():
        raise HarnessError(f"{root} is not a built harness corpus (no corpus.json); run `harness corpus build`")
    meta = json.loads(meta_path.read_text())
    if speakers:
        lines = []
        for s in meta["speakers"]:
            extra = "" if s["variant_text"] is None else "  [own variant: " + "; ".join(
                line for line in s["variant_text"].splitlines()[3:] if line) + "]"
            lines.append(f"{s['index']:3d} {s['gender']} {s['language']:<15}{s['variant']:<12}rate {s['rate']:3d} "
                         f"pitch {s['pitch']:2d} range {s['pitch_range']:2d}{extra}")
        return "\n".join(lines)
    return (f"{root}: profile {meta['profile']}, seed {meta['seed']}, espeak-ng {meta['espeak_ng']}, "
            f"{len(meta['speakers'])} speakers\n" + format_statistics(meta["statistics"]))
