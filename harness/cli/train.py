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
    import importlib

    import yaml

    from harness.config import merge_config, parse_overrides
    from harness.errors import HarnessError

    every, keep = _ship_selection(args)  # checked before anything: a typo must not cost the run
    module = importlib.import_module({"hubert": "harness.training.hubert", "wav2vec2": "harness.training.wav2vec2",
                                      "dino": "harness.training.dino"}[args.recipe])
    default_recipe, pretrain = module.default_recipe, module.pretrain
    recipe = default_recipe()
    if args.config:
        try:
            recipe = merge_config(recipe, yaml.safe_load(Path(args.config).read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise HarnessError(f"cannot read recipe {args.config}: {exc}") from None
    overrides = parse_overrides(args.set or [])
    if "iterations" in overrides and "iterations" in recipe:  # iterations.N.key=value: one iteration of the list
        per_iteration = overrides.pop("iterations")
        iterations = [dict(it) for it in recipe["iterations"]]
        for index, body in per_iteration.items():
            if not isinstance(body, dict) or not str(index).isdigit() or int(index) >= len(iterations):
                raise HarnessError(f"--set iterations.N.KEY=VALUE needs N in 0..{len(iterations) - 1}")
            current, body = iterations[int(index)], dict(body)
            if "init" in body and "init" not in current:  # optional: warm start or scratch
                current["init"] = "scratch"
            if isinstance(body.get("optim"), dict):  # an iteration's own optimiser settings (names checked later)
                current["optim"] = {**current.get("optim", {}), **body.pop("optim")}
            iterations[int(index)] = merge_config(current, body, f"iterations.{index}.")
        recipe["iterations"] = iterations
    recipe = merge_config(recipe, overrides)
    if args.seed is not None:
        recipe["seed"] = args.seed
    from harness.corpus.layout import embedded_corpus_dir

    corpus = Path(args.corpus) if args.corpus else embedded_corpus_dir()
    if not (corpus / "corpus.json").exists() and not (corpus / "LibriSpeech").is_dir():
        raise HarnessError(f"{corpus} is not a corpus root (no corpus.json or LibriSpeech/); run `harness corpus build`")
    reuse = None
    if args.reuse and args.reuse.startswith("@"):  # a run shipped with the harness, e.g. @tiny_hubert
        from importlib import resources

        reuse = Path(str(resources.files("harness.upstreams").joinpath("checkpoints", args.reuse[1:])))
        if not (reuse / "recipe.yaml").exists():
            raise HarnessError(f"--reuse {args.reuse}: no pretraining run of that name ships with the harness")
    elif args.reuse:
        reuse = Path(args.reuse)
    if reuse is not None and reuse.resolve() == Path(args.out).resolve():
        raise HarnessError("--reuse needs another run than --out (it copies from it)")
    finals = pretrain(corpus, Path(args.out), recipe, progress=not args.quiet, reuse=reuse)
    backend = "speechbrain" if args.recipe == "dino" else "hf"
    for n, final in enumerate(finals, 1):
        print(f"iteration {n}: {backend}:{final}")
    print(f"checkpoints: {Path(args.out)}/it*/step_*  (log: {Path(args.out) / 'log.jsonl'})")
    if args.ship:
        from harness.training.hubert import ship

        shipped = ship(Path(args.out), Path(args.ship), every[0] if every and len(every) == 1 else every, steps=keep)
        print(f"shipped {len(shipped)} float16 checkpoints to {args.ship}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import yaml

    from harness.config import merge_config, parse_overrides
    from harness.corpus.layout import require_embedded_corpus
    from harness.errors import HarnessError
    from harness.training.finetune import default_recipe, finetune
    from harness.registry import parse_spec

    parse_spec(args.upstream)
    recipe = default_recipe()
    if args.config:
        try:
            recipe = merge_config(recipe, yaml.safe_load(Path(args.config).read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise HarnessError(f"cannot read recipe {args.config}: {exc}") from None
    recipe = merge_config(recipe, parse_overrides(args.set or []))
    for key, flag in (("freeze_cnn", args.freeze_cnn), ("reinit_top", args.reinit_top), ("steps", args.steps)):
        if flag is not None:
            recipe[key] = flag
    data_root = Path(args.data_root) if args.data_root else require_embedded_corpus()
    final = finetune(args.upstream, args.task, data_root, Path(args.out), recipe, progress=not args.quiet)
    meta = (final / "finetune.json").read_text()
    import json

    print(f"fine-tuned encoder: hf:{final} (dev token error rate {json.loads(meta)['dev_token_error_rate']:.4f}); "
          f"log: {Path(args.out) / 'log.jsonl'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the ``harness`` parser."""
    pt = sub.add_parser("pretrain", help="self-supervised pretraining of a small model (HuBERT, wav2vec2 or DINO)",
                        description="Iterative masked prediction of k-means targets (MFCCs, then a layer of the "
                                    "previous iteration). Every checkpoint is a HuggingFace model dir usable as "
                                    "hf:DIR. Re-running the same command resumes from the last checkpoint.")
    pt.add_argument("--recipe", choices=["hubert", "wav2vec2", "dino"], default="hubert",
                    help="hubert: iterative masked prediction of k-means targets (default); wav2vec2: contrastive "
                         "with a Gumbel quantiser, same architecture and budget; dino: speaker self-distillation "
                         "(ECAPA-TDNN, no labels)")
    pt.add_argument("--corpus", help="corpus root (default: the embedded corpus)")
    pt.add_argument("--out", required=True, help="output folder for checkpoints, targets and the log")
    pt.add_argument("--config", help="YAML recipe merged over the default (harness/training/hubert.yaml)")
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
