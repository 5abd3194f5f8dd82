"""``harness pretrain`` and ``harness finetune``: models trained here."""

from __future__ import annotations

import argparse
from pathlib import Path


def _ship_selection(args) -> tuple[list[int] | None, list[int] | None]:
    """--ship-every (intervals) and --ship-steps (explicit steps), parsed and checked."""
    from harness.errors import HarnessError

    def ints(text: str, flag: str, form: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise HarnessError(f"{flag} expects {form}, got {text!r}") from None
        if any(v <= 0 for v in values):
            raise HarnessError(f"{flag} expects positive steps, got {text!r}")
        return values

    if (args.ship_every or args.ship_steps) and not args.ship:
        raise HarnessError("--ship-every and --ship-steps need --ship DIR")
    if args.ship_every and args.ship_steps:
        raise HarnessError("give --ship-every or --ship-steps, not both")
    every = ints(args.ship_every, "--ship-every", "STEPS or STEPS,STEPS,...") if args.ship_every else None
    keep = ints(args.ship_steps, "--ship-steps", "STEP,STEP,...") if args.ship_steps else None
    return every, keep


def _pretrain(args: argparse.Namespace) -> int:
    from harness.training.recipe import run_pretraining

    every, keep = _ship_selection(args)  # checked before anything: a typo must not cost the run
    result = run_pretraining(args.recipe, Path(args.out), corpus=args.corpus, config=args.config,
                             overrides=args.set or [], seed=args.seed, reuse=args.reuse, ship_to=args.ship,
                             ship_every=every, ship_steps=keep, progress=not args.quiet)
    print(result.format())
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from harness.training.finetune import run_finetuning

    result = run_finetuning(args.upstream, args.task, Path(args.out), data_root=args.data_root, config=args.config,
                            overrides=args.set or [], steps=args.steps, freeze_cnn=args.freeze_cnn,
                            reinit_top=args.reinit_top, progress=not args.quiet)
    print(result.format())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the ``harness`` parser."""
    from harness.registry import (
        recipe_names,  # entry-point names only: no recipe is imported
    )

    pt = sub.add_parser("pretrain", help="self-supervised pretraining of a small model (HuBERT, wav2vec2 or DINO)",
                        description="Pretraining with a registered recipe (default hubert: iterative masked "
                                    "prediction of k-means targets, MFCCs, then a layer of the previous iteration). "
                                    "Every checkpoint is an upstream (hf:DIR, or speechbrain:DIR for dino). "
                                    "Re-running the same command resumes from the last checkpoint.")
    pt.add_argument("--recipe", choices=recipe_names(), default="hubert",
                    help="a recipe of the harness.recipes entry points; built in: hubert: iterative masked prediction "
                         "of k-means targets (default); wav2vec2: contrastive with a Gumbel quantiser, same "
                         "architecture and budget; dino: speaker self-distillation (ECAPA-TDNN, no labels)")
    pt.add_argument("--corpus", help="corpus root (default: the embedded corpus)")
    pt.add_argument("--out", required=True, help="output folder for checkpoints, targets and the log")
    pt.add_argument("--config", help="YAML recipe merged over the recipe's default (e.g. harness/training/hubert.yaml)")
    pt.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a recipe value, e.g. iterations.1.layer=3 (repeatable)")
    pt.add_argument("--seed", type=int, help="overrides the recipe's seed")
    pt.add_argument("--reuse", metavar="RUN", help="start a new --out from the finished iterations of an earlier run "
                    "that this recipe shares (e.g. after lengthening iteration 2, only iteration 2 is trained); "
                    "@tiny_hubert starts from the shipped run (its float16 final checkpoints)")
    pt.add_argument("--ship", metavar="DIR", help="after training, copy the checkpoints as float16 into DIR "
                    "(how the harness's own tiny_hubert checkpoints were made)")
    pt.add_argument("--ship-steps", metavar="STEP,STEP", help="with --ship: exactly these steps (plus each "
                    "iteration's last), e.g. 600,1200,1800,2400")
    pt.add_argument("--ship-every", metavar="STEPS", help="with --ship: only steps that are multiples of STEPS "
                    "(or STEPS,STEPS,... one per iteration), plus each iteration's last (default: every checkpoint)")
    pt.add_argument("--quiet", action="store_true", help="no progress bars")
    pt.set_defaults(func=_pretrain)

    ft = sub.add_parser("finetune", help="CTC fine-tuning of a whole upstream (saved as an upstream)",
                        description="Fine-tune a HuggingFace wav2vec2-family upstream end to end with a linear CTC "
                                    "head on the task's tokens (asr: characters, pr: phones). Resumable; every "
                                    "checkpoint is a model directory usable as hf:DIR.")
    ft.add_argument("--upstream", required=True, help="registry name or hf:SOURCE")
    ft.add_argument("--task", default="asr", choices=["asr", "pr"], help="CTC task whose tokens and data to use")
    ft.add_argument("--out", required=True, help="output folder")
    ft.add_argument("--data-root", help="corpus root (default: the embedded corpus)")
    ft.add_argument("--config", help="YAML recipe merged over the default (harness/training/finetune.yaml)")
    ft.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value (repeatable)")
    ft.add_argument("--steps", type=int, help="training steps")
    ft.add_argument("--freeze-cnn", dest="freeze_cnn", action="store_true", default=None,
                    help="keep the waveform CNN frozen (default)")
    ft.add_argument("--no-freeze-cnn", dest="freeze_cnn", action="store_false", help="train the CNN too")
    ft.add_argument("--reinit-top", type=int, help="re-initialise the top K transformer layers first")
    ft.add_argument("--quiet", action="store_true")
    ft.set_defaults(func=_finetune)
