"""Build the embedded synthetic corpus in the layouts of the real corpora (:data:`LAYOUTS`):
LibriSpeech (+ alignments, s3prl phone labels, lexicon), Fluent Speech Commands, VoxCeleb1
(+ veri_test.txt, veri_test2.txt), Speech Commands v0.01 (+ its separate test archive),
IEMOCAP and Audio SNIPS.

Pipeline: plan (pure function of profile + seed) -> synthesise every utterance in
a fresh forked process (:mod:`.synth`: espeak keeps state between utterances, see
:mod:`.espeak`), writing its audio and an alignment sidecar atomically -> assemble
the index files (transcripts, CSVs, split lists, CTM alignments, s3prl phone
labels, trial lists) -> write ``corpus.json`` and ``manifest.sha256``.

Each layout draws from its own random stream (a child of the seed's ``SeedSequence`` or a
``[seed, constant]`` generator), so adding a layout leaves every earlier file byte-identical.

An interrupted build resumes: finished utterances (audio + sidecar) are kept and
only the missing ones are synthesised.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from harness import __version__
from harness.audio import SAMPLE_RATE
from harness.corpus import align as alignment
from harness.corpus import synth
from harness.corpus.commands import (
    SC_KEYWORDS,
    speech_commands_jobs,
    test_set_jobs,
    write_background_noise,
    write_test_set_silence,
)
from harness.corpus.draws import channel as draw_channel
from harness.corpus.draws import jitter as draw_jitter
from harness.corpus.draws import session_name
from harness.corpus.layout import (
    ALIGNMENT_DIR,
    FSC_DIR,
    IEMOCAP_DIR,
    LEXICON_NAME,
    LIBRI_DIR,
    LIBRI_SPLITS,
    PHONE_DIR,
    PHONE_INVENTORY,
    PHONE_S3PRL_DIR,
    PHONE_TABLE,
    SC_DIR,
    SC_TEST_DIR,
    SNIPS_DIR,
    VERI_TEST2_NAME,
    VOX_DIR,
    CorpusPaths,
)
from harness.corpus.lists import (
    verification_trials,
    verification_trials_v2,
    write_lexicon,
    write_phone_labels_s3prl,
)
from harness.corpus.manifest import write_manifest
from harness.corpus.profiles import PROFILES, Profile
from harness.corpus.slots import snips_jobs, write_snips_index
from harness.corpus.speakers import SpeakerRecipe, make_extra_speakers, make_speakers
from harness.corpus.stats import LISTS, corpus_statistics
from harness.corpus.styles import iemocap_jobs, write_emo_evaluation
from harness.corpus.text import INTENTS, SentenceSampler, command_phrasings, lexicon
from harness.data.fsc import FSC_SPLITS
from harness.data.librispeech import SPLITS as LIBRI_SPLIT_OF
from harness.errors import HarnessError
from harness.fsutil import write_json, write_text

OUT_RATE = SAMPLE_RATE
FRAME_SHIFT = 160  # 10 ms phone-label frames
N_CANDIDATES = 6  # alternative texts per utterance, tried in order if alignment fails


#: every layout a corpus holds, by name (a corpus built before one existed gets it on the next build)
LAYOUTS = {"librispeech": LIBRI_DIR, "fsc": FSC_DIR, "voxceleb1": VOX_DIR, "phone_labels": PHONE_DIR,
           "voxceleb1_trials": f"{VOX_DIR}/veri_test.txt", "speech_commands": SC_DIR, "iemocap": IEMOCAP_DIR,
           "speech_commands_test": SC_TEST_DIR, "snips": SNIPS_DIR, "phone_labels_s3prl": PHONE_S3PRL_DIR,
           "librispeech_lexicon": f"{LIBRI_DIR}/{LEXICON_NAME}", "voxceleb1_trials_v2": f"{VOX_DIR}/{VERI_TEST2_NAME}"}
#: the layouts every build has made together since the seven of them first existed; the ones
#: after them are optional in :func:`plan` and :func:`build` (to rebuild what an older version made)
BASE_LAYOUTS = ("librispeech", "fsc", "voxceleb1", "phone_labels", "voxceleb1_trials", "speech_commands", "iemocap")


# --------------------------------------------------------------------------- plan
def plan(profile: Profile, seed: int, layouts=None) -> tuple[list[SpeakerRecipe], list[dict]]:
    """All speakers and utterance jobs; a pure function of (profile, seed, versions).

    ``layouts``: the names (keys of :data:`LAYOUTS`) to plan, every one by default; the
    :data:`BASE_LAYOUTS` are always planned. Leaving a later layout out changes no other job.
    """
    layouts = _layout_set(layouts)
    root = np.random.SeedSequence(seed)
    spk_ss, libri_ss, fsc_ss, vox_ss = root.spawn(4)
    speakers = make_speakers(profile.speakers, np.random.default_rng(spk_ss))
    vocab = lexicon(profile.vocabulary)
    sampler = SentenceSampler(vocab)
    jobs: list[dict] = []

    def sentence_candidates(rng: np.random.Generator) -> list[str]:
        return [sampler.sample(rng) for _ in range(N_CANDIDATES)]

    # LibriSpeech: speaker-disjoint splits, two chapters per speaker
    rng = np.random.default_rng(libri_ss)
    order = [int(i) for i in rng.permutation(profile.speakers)]
    n_train, n_dev, n_test = profile.libri_split_speakers
    split_of = {}
    for k, spk in enumerate(order[: n_train + n_dev + n_test]):
        split_of[spk] = LIBRI_SPLITS[0] if k < n_train else LIBRI_SPLITS[1] if k < n_train + n_dev else LIBRI_SPLITS[2]
    for spk in sorted(split_of):
        speaker_id = 100 + 7 * spk
        chapters = [1000 + 37 * spk + c for c in range(2)]
        channels = [draw_channel(rng) for _ in chapters]
        for u in range(profile.libri_utts_per_speaker):
            c = u % 2
            utt = f"{speaker_id}-{chapters[c]}-{u // 2:04d}"
            rel = f"{LIBRI_DIR}/{split_of[spk]}/{speaker_id}/{chapters[c]}/{utt}.flac"
            jobs.append({
                "corpus": "librispeech", "split": split_of[spk], "utt": utt, "speaker": spk, "path": rel,
                "texts": sentence_candidates(rng), "jitter": draw_jitter(rng), "channel": channels[c],
                "noise_seed": int(rng.integers(2**31)), "format": "FLAC",
            })

    # Fluent Speech Commands: speaker-disjoint splits, intents cycled so all appear
    rng = np.random.default_rng(fsc_ss)
    order = [int(i) for i in rng.permutation(profile.speakers)]
    n_train, n_dev, n_test = profile.fsc_split_speakers
    fsc_split = {}
    for k, spk in enumerate(order[: n_train + n_dev + n_test]):
        fsc_split[spk] = "train" if k < n_train else "valid" if k < n_train + n_dev else "test"
    intents = rng.permutation(len(INTENTS))
    position = {spk: k for k, spk in enumerate(order)}  # consecutive within each split
    for spk in sorted(fsc_split):
        speaker_id = f"spk{spk:03d}{session_name(rng)[:5]}"
        channel = draw_channel(rng)
        for u in range(profile.fsc_utts_per_speaker):
            # consecutive speakers continue the cycle, so even a small split sees every intent
            k = position[spk] * profile.fsc_utts_per_speaker + u
            action, obj, loc = INTENTS[int(intents[k % len(INTENTS)])]
            phrasings = command_phrasings(action, obj, loc)
            pick = [phrasings[int(i)] for i in rng.permutation(len(phrasings))]
            utt = f"{speaker_id}-{u:04d}"
            jobs.append({
                "corpus": "fsc", "split": fsc_split[spk], "utt": utt, "speaker": spk, "speaker_id": speaker_id,
                "path": f"{FSC_DIR}/wavs/speakers/{speaker_id}/{utt}.wav", "texts": pick[:N_CANDIDATES],
                "intent": [action, obj, loc], "jitter": draw_jitter(rng), "channel": channel,
                "noise_seed": int(rng.integers(2**31)), "format": "WAV",
            })

    # VoxCeleb1 identification: closed set, every speaker in every split, split by session
    rng = np.random.default_rng(vox_ss)
    for spk in range(profile.speakers):
        vox_id = f"id{10001 + spk}"
        n = 0
        for s in range(profile.vox_sessions):
            session = session_name(rng)
            channel = draw_channel(rng)
            split = 1 if s < profile.vox_sessions - 2 else 2 if s == profile.vox_sessions - 2 else 3
            for _ in range(profile.vox_utts_per_session):
                n += 1
                rel = f"{vox_id}/{session}/{n:05d}.wav"
                jobs.append({
                    "corpus": "voxceleb1", "split": split, "utt": rel, "speaker": spk, "path": f"{VOX_DIR}/wav/{rel}",
                    "texts": sentence_candidates(rng), "jitter": draw_jitter(rng), "channel": channel,
                    "noise_seed": int(rng.integers(2**31)), "format": "WAV",
                })

    # layouts added later draw from their own streams, so the ones above stay byte-identical
    sc_ss, emo_ss = root.spawn(2)
    jobs += speech_commands_jobs(profile, np.random.default_rng(sc_ss))
    jobs += iemocap_jobs(profile, speakers, np.random.default_rng(emo_ss), sentence_candidates)
    sc_test_ss, snips_ss = root.spawn(2)
    if "speech_commands_test" in layouts:
        # new speakers, after every earlier one (the layouts above chose among the first ones)
        rng = np.random.default_rng(sc_test_ss)
        extra = make_extra_speakers(len(speakers), profile.sc_test_speakers, rng)
        speakers = speakers + extra
        taken = {j["utt"].split("/")[1].split("_nohash_")[0] for j in jobs if j["corpus"] == "speech_commands"}
        jobs += test_set_jobs(profile, extra, taken, rng)
    if "snips" in layouts:
        jobs += snips_jobs(profile, np.random.default_rng(snips_ss), N_CANDIDATES)
    return speakers, jobs


def _layout_set(layouts) -> set[str]:
    if layouts is None:
        return set(LAYOUTS)
    chosen = set(layouts) | set(BASE_LAYOUTS)
    unknown = sorted(chosen - set(LAYOUTS))
    if unknown:
        raise HarnessError(f"unknown corpus layout(s) {', '.join(unknown)}; choose from {', '.join(LAYOUTS)}")
    return chosen


# ----------------------------------------------------------------------- assembly
def _fmt_time(samples: int) -> str:
    return f"{samples / OUT_RATE:.4f}"


def _ctm_lines(utt: str, segments: list, skip_silence: bool) -> list[str]:
    out = []
    for label, start, end in segments:
        if skip_silence and label == alignment.SILENCE:
            continue
        out.append(f"{utt} 1 {start / OUT_RATE:.7f} {(end - start) / OUT_RATE:.7f} {label}")
    return out


def frame_labels(phones: list, n_samples: int) -> list[str]:
    """Phone label of each 10 ms frame, taken at the frame centre; floor(n/160) frames."""
    n_frames = n_samples // FRAME_SHIFT
    labels, k = [], 0
    for f in range(n_frames):
        centre = f * FRAME_SHIFT + FRAME_SHIFT // 2
        while phones[k][2] <= centre:
            k += 1
        labels.append(phones[k][0])
    return labels


def _assemble(root: Path, profile: Profile, seed: int, speakers: list[SpeakerRecipe], jobs: list[dict],
              records: dict[str, dict], espeak_version: str, layouts: set[str]) -> dict:
    paths = CorpusPaths(root)
    by_corpus: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        by_corpus[job["corpus"]].append(job)

    # LibriSpeech transcripts and alignments
    trans: dict[str, list[str]] = defaultdict(list)
    ctm_words: dict[str, list[str]] = defaultdict(list)
    ctm_phones: dict[str, list[str]] = defaultdict(list)
    for job in by_corpus["librispeech"]:
        rec = records[job["utt"]]
        chapter_dir = str(Path(job["path"]).parent)
        spk, chap, _ = job["utt"].split("-")
        trans[f"{chapter_dir}/{spk}-{chap}.trans.txt"].append(f"{job['utt']} {rec['text'].upper()}")
        ctm_words[job["split"]] += _ctm_lines(job["utt"], rec["words"], False)
        ctm_phones[job["split"]] += _ctm_lines(job["utt"], rec["phones"], False)
    for path, lines in trans.items():
        write_text(root / path, "\n".join(sorted(lines)) + "\n")
    for split in LIBRI_SPLITS:
        write_text(paths.ctm(split, "words"), "\n".join(ctm_words[split]) + "\n")
        write_text(paths.ctm(split, "phones"), "\n".join(ctm_phones[split]) + "\n")

    # s3prl phone_linear labels: one line per utterance, phone indices at 10 ms
    # the inventory of the first three layouts' phones (later layouts must not renumber the labels)
    first = [j for j in jobs if j["corpus"] in ("librispeech", "fsc", "voxceleb1")]
    inventory = sorted({p[0] for j in first for p in records[j["utt"]]["phones"]} - {alignment.SILENCE})
    inventory = [alignment.SILENCE] + inventory
    index = {p: i for i, p in enumerate(inventory)}
    inventory_text = "".join(f"{p} {i}\n" for p, i in index.items())
    write_text(paths.phone_labels / PHONE_INVENTORY, inventory_text)
    label_lines, split_lists = {}, defaultdict(list)
    for job in by_corpus["librispeech"]:
        rec = records[job["utt"]]
        labels = frame_labels(rec["phones"], rec["samples"])
        label_lines[job["utt"]] = job["utt"] + " " + " ".join(str(index[x]) for x in labels)
        split_lists[job["split"]].append(job["utt"])
    write_text(paths.phone_labels / PHONE_TABLE, "\n".join(sorted(label_lines.values())) + "\n")
    for harness_split, split in LIBRI_SPLIT_OF.items():  # s3prl's train/dev/test_split.txt
        write_text(paths.phone_labels / f"{harness_split}_split.txt", "\n".join(sorted(split_lists[split])) + "\n")

    # Fluent Speech Commands CSVs (leading unnamed index column, as in the real release)
    for split in FSC_SPLITS:
        rows = [",path,speakerId,transcription,action,object,location"]
        items = sorted((j for j in by_corpus["fsc"] if j["split"] == split), key=lambda j: j["utt"])
        for i, job in enumerate(items):
            rel = job["path"][len(FSC_DIR) + 1:]
            action, obj, loc = job["intent"]
            rows.append(f"{i},{rel},{job['speaker_id']},{records[job['utt']]['text']},{action},{obj},{loc}")
        write_text(paths.fsc / "data" / f"{split}_data.csv", "\n".join(rows) + "\n")
    fsc_ctm = []
    for job in sorted(by_corpus["fsc"], key=lambda j: j["utt"]):
        fsc_ctm += _ctm_lines(job["utt"], records[job["utt"]]["words"], False)
    write_text(paths.fsc / ALIGNMENT_DIR / "words.ctm", "\n".join(fsc_ctm) + "\n")

    # VoxCeleb1 identification split
    iden = sorted(f"{j['split']} {j['utt']}" for j in by_corpus["voxceleb1"])
    write_text(paths.voxceleb1 / "iden_split.txt", "\n".join(iden) + "\n")
    # VoxCeleb1 verification trials (veri_test.txt): among a few speakers kept out of ASV training
    write_text(paths.voxceleb1 / "veri_test.txt", "\n".join(verification_trials(by_corpus["voxceleb1"], profile, seed)) + "\n")

    # Speech Commands v0.01: split lists (train = every clip not listed) and background noise
    for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        listed = sorted(j["utt"] for j in by_corpus["speech_commands"] if j["split"] == split)
        write_text(paths.speech_commands / name, "\n".join(listed) + "\n")
    write_background_noise(paths.speech_commands / "_background_noise_", seed)
    write_emo_evaluation(paths.iemocap, by_corpus["iemocap"], records)

    stats = corpus_statistics(jobs, records)
    stats[LISTS] = _assemble_later(paths, profile, seed, by_corpus, records, layouts, label_lines, inventory_text)
    meta = {
        "format": 1,
        "profile": profile.name,
        "seed": seed,
        "harness_version": __version__,
        "espeak_ng": espeak_version,
        "sample_rate": OUT_RATE,
        "phone_inventory": inventory,
        "speakers": [s.to_dict() for s in speakers],
        "statistics": stats,
        "layouts": {name: where for name, where in LAYOUTS.items() if name in layouts},
    }
    write_json(paths.metadata, meta)
    return meta


def _assemble_later(paths: CorpusPaths, profile: Profile, seed: int, by_corpus: dict[str, list[dict]],
                    records: dict[str, dict], layouts: set[str], label_lines: dict[str, str],
                    inventory_text: str) -> dict:
    """The index files of the layouts after :data:`BASE_LAYOUTS`, those in ``layouts``; each
    from its own stream. Returns their summary for ``corpus.json`` (``harness corpus info``)."""
    summary: dict[str, dict] = {}
    if "speech_commands_test" in layouts:  # _silence_ as large as each keyword's class
        per_class = sum(1 for j in by_corpus["speech_commands_test"] if j["texts"][0] == SC_KEYWORDS[0])
        names = write_test_set_silence(paths.speech_commands_test / "_silence_", seed, per_class)
        summary["speech_commands_test"] = {"clips_per_class": per_class, "silence_clips": len(names)}
    if "snips" in layouts:
        summary["snips"] = write_snips_index(paths.snips, by_corpus["snips"], records)
    if "phone_labels_s3prl" in layouts:
        train = [j["utt"] for j in by_corpus["librispeech"] if j["split"] == LIBRI_SPLIT_OF["train"]]
        summary["phone_labels_s3prl"] = write_phone_labels_s3prl(paths.phone_labels_s3prl, label_lines, train,
                                                                 inventory_text, seed)
    if "librispeech_lexicon" in layouts:  # the sentence vocabulary: every word a transcript can hold
        spoken = {w for j in by_corpus["librispeech"] for w in records[j["utt"]]["text"].split()}
        summary["librispeech_lexicon"] = write_lexicon(paths.lexicon, sorted(spoken | set(lexicon(profile.vocabulary))))
    if "voxceleb1_trials_v2" in layouts:
        trials = verification_trials_v2(by_corpus["voxceleb1"], profile, seed)
        write_text(paths.voxceleb1 / VERI_TEST2_NAME, "\n".join(trials) + "\n")
        sides = {u for line in trials for u in line.split()[1:]}
        summary["voxceleb1_trials_v2"] = {"trials": len(trials), "target": sum(t[0] == "1" for t in trials),
                                          "utterances": len(sides), "speakers": len({u.split("/")[0] for u in sides})}
    return summary


# --------------------------------------------------------------------------- entry
def _synthesise_forked(out: Path, todo: list[dict], n_workers: int, bar) -> dict[str, dict]:
    """Run every job in a child forked for it alone (espeak's state never carries over), at most
    ``n_workers`` at a time; returns {utterance: record} from the sidecars the children write.

    Plain ``os.fork`` and ``os.wait``, no ``multiprocessing.Pool``: a pool that replaces each
    worker after one task forked replacements while its handler threads held its queue's lock,
    and ``harness`` under a loaded test run hung for good in such a worker's lock. A child that
    fails writes its one-line reason beside the sidecars; the parent stops the others and
    raises it. Ctrl-C (KeyboardInterrupt in the parent) stops every child before it returns."""
    errors = out / ".build" / "errors"
    errors.mkdir(parents=True, exist_ok=True)
    pending = list(reversed(todo))
    running: dict[int, dict] = {}
    records: dict[str, dict] = {}

    def start(job: dict) -> None:
        # Ctrl-C is blocked across the fork: a SIGINT landing mid-fork was otherwise lost (the
        # build went on); blocked, it stays pending and is delivered in the parent once the
        # child is registered, while the child (whose pending set starts empty) ignores it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            raise
        if pid != 0:
            running[pid] = job
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            return
        # the child: synthesise, leave the sidecar (or a reason), exit without cleanup
        code = 1
        try:
            synth.ignore_interrupts()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            result = synth.run_job(job)
            if "error" in result:
                (errors / job["utt"].replace("/", "__")).write_text(result["error"])
            else:
                code = 0
        except BaseException as exc:  # noqa: BLE001  (anything, reported by the parent in one line)
            try:
                (errors / job["utt"].replace("/", "__")).write_text(f"{type(exc).__name__}: {exc}")
            except OSError:
                pass
        finally:
            os._exit(code)

    def stop_all() -> None:
        for pid in list(running):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            running.pop(pid, None)

    try:
        while pending or running:
            while pending and len(running) < n_workers:
                start(pending.pop())
            pid, status = os.wait()
            job = running.pop(pid, None)
            if job is None:
                continue
            if os.waitstatus_to_exitcode(status) != 0:
                reason = errors / job["utt"].replace("/", "__")
                stop_all()
                raise HarnessError(reason.read_text() if reason.exists() else
                                   f"synthesising {job['utt']} failed (exit status {os.waitstatus_to_exitcode(status)})")
            records[job["utt"]] = json.loads(synth.sidecar_path(out, job).read_text())
            bar.update(1)
    except BaseException:
        stop_all()
        raise
    return records


def build(out: Path, profile_name: str = "default", seed: int = 0, workers: int | None = None,
          progress: bool = True, layouts=None) -> dict:
    """Build (or finish building) a corpus at ``out``; returns its metadata.

    ``layouts``: names of :data:`LAYOUTS` to build (default all; :data:`BASE_LAYOUTS` always),
    e.g. to make what an older version made; a later build with more layouts adds them in place.
    """
    from harness.corpus.espeak import Espeak, prepare_data_dir

    if profile_name not in PROFILES:
        raise HarnessError(f"unknown profile {profile_name!r}; choose from {', '.join(PROFILES)}")
    wanted = _layout_set(layouts)
    profile = PROFILES[profile_name]
    out = Path(out)
    paths = CorpusPaths(out)
    identity = {"profile": profile.name, "seed": seed, "harness_version": __version__}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot create output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise HarnessError(f"output directory {out} is not writable; choose another --out")
    build_dir = out / ".build"
    stamp = build_dir / "identity.json"
    if paths.metadata.exists() and paths.manifest.exists():
        meta = json.loads(paths.metadata.read_text())
        if {k: meta.get(k) for k in identity} != identity:
            raise HarnessError(
                f"{out} already holds a corpus built with profile {meta.get('profile')!r} seed {meta.get('seed')}; "
                "use another --out or delete it")
        missing = sorted(wanted - set(meta.get("layouts", {})))
        if not missing:
            return meta
        # built before these layouts existed: synthesis is deterministic, so finishing the build
        # adds them and rewrites the existing files with identical bytes
        if progress:
            print(f"adding layout(s) {', '.join(missing)} to the corpus at {out}", file=sys.stderr)
        build_dir.mkdir(exist_ok=True)
        write_json(stamp, identity)
    build_dir.mkdir(exist_ok=True)
    if stamp.exists() and json.loads(stamp.read_text()) != identity:
        raise HarnessError(f"{out} holds an unfinished build with different settings; use another --out or delete it")
    if not stamp.exists() and any(p.name != ".build" for p in out.iterdir()):
        raise HarnessError(f"{out} is not empty and is not a harness corpus; choose an empty or new --out")
    write_json(stamp, identity)

    t0 = time.time()
    speakers, jobs = plan(profile, seed, wanted)
    variants = {s.variant: s.variant_text for s in speakers if s.variant_text}
    data_parent = prepare_data_dir(build_dir / "espeak", variants)

    records: dict[str, dict] = {}
    todo = []
    for job in jobs:
        side = synth.sidecar_path(out, job)
        if side.exists() and (out / job["path"]).exists():
            records[job["utt"]] = json.loads(side.read_text())
        else:
            todo.append(job)

    # Import what the children use before forking, so each child does not pay for it.
    import scipy.signal  # noqa: F401
    import soundfile  # noqa: F401

    engine = Espeak(data_parent)
    synth.prepare(engine, speakers, out)
    espeak_version = engine.version
    if todo:
        from tqdm import tqdm

        n_workers = workers or min(2, os.cpu_count() or 1)
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="utt", desc="synthesising",
                   disable=not progress, file=sys.stderr)
        records.update(_synthesise_forked(out, todo, n_workers, bar))
        bar.close()
    synth_seconds = time.time() - t0
    meta = _assemble(out, profile, seed, speakers, jobs, records, espeak_version, wanted)
    for stray in out.rglob(".*.tmp*"):  # temp files of a killed earlier run
        if stray.is_file():
            stray.unlink()
    write_manifest(out)
    shutil.rmtree(build_dir, ignore_errors=True)
    meta["build_seconds"] = round(time.time() - t0, 1)
    meta["synthesis_seconds"] = round(synth_seconds, 1)
    return meta
