"""``harness corpus``: build, check and describe the embedded corpus."""

from __future__ import annotations

import argparse
from pathlib import Path


def embedded_corpus_dir(profile: str = "default", seed: int = 0) -> Path:
    """Where the embedded corpus of ``profile`` and ``seed`` lives (``$HARNESS_HOME/corpus/PROFILE-seedN``)."""
    from harness.corpus.layout import embedded_corpus_dir as where

    return where(profile, seed)


def _corpus_build(args: argparse.Namespace) -> int:
    from harness.corpus.build import build
    from harness.corpus.stats import describe_built

    out = Path(args.out) if args.out else embedded_corpus_dir(args.profile, args.seed)
    print(describe_built(out, build(out, args.profile, args.seed, workers=args.workers, progress=not args.quiet)))
    return 0


def _corpus_check(args: argparse.Namespace) -> int:
    from harness.corpus.manifest import check_manifest

    root = Path(args.dir) if args.dir else embedded_corpus_dir()
    print(f"ok: {check_manifest(root)} files match {root}/manifest.sha256")
    return 0


def _corpus_info(args: argparse.Namespace) -> int:
    from harness.corpus.stats import describe_corpus

    print(describe_corpus(Path(args.dir) if args.dir else embedded_corpus_dir(), args.speakers))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the ``harness`` parser."""
    corpus = sub.add_parser("corpus", help="build, check or describe the embedded synthetic corpus",
                            description="The embedded offline corpus: espeak-ng speech written in the "
                                        "LibriSpeech, Fluent Speech Commands and VoxCeleb1 layouts.")
    csub = corpus.add_subparsers(dest="corpus_command", metavar="ACTION")
    cb = csub.add_parser("build", help="synthesise a corpus (resumes an interrupted build)",
                         description="Synthesise a deterministic multi-speaker corpus with phone and word "
                                     "alignments. Same seed and versions give byte-identical files.")
    cb.add_argument("--profile", choices=["tiny", "default"], default="default",
                    help="tiny: ~200 utterances for tests; default: ~5,000 utterances, 48 speakers")
    cb.add_argument("--out", help="output directory (default: $HARNESS_HOME/corpus/PROFILE-seedN)")
    cb.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    cb.add_argument("--workers", type=int, default=None, help="synthesis processes (default: up to 2)")
    cb.add_argument("--quiet", action="store_true", help="no progress bar")
    cb.set_defaults(func=_corpus_build)
    cc = csub.add_parser("check", help="verify every file against manifest.sha256",
                         description="Verify a corpus: every file listed in manifest.sha256 exists and "
                                     "matches its hash, and no unlisted file is present.")
    cc.add_argument("dir", nargs="?", help="corpus root (default: the embedded default corpus)")
    cc.set_defaults(func=_corpus_check)
    ci = csub.add_parser("info", help="print a corpus's statistics or speaker recipes",
                         description="Print hours, utterances, speakers, phones and words per split.")
    ci.add_argument("dir", nargs="?", help="corpus root (default: the embedded default corpus)")
    ci.add_argument("--speakers", action="store_true", help="list every speaker's recipe instead")
    ci.set_defaults(func=_corpus_info)

