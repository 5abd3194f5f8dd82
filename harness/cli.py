"""The ``harness`` command.

Only argparse is imported at start-up; each subcommand imports what it needs when
it runs, so ``harness --help`` stays fast (torch, s3prl, speechbrain are heavy).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence


def embedded_corpus_dir(profile: str = "default", seed: int = 0) -> Path:
    from .corpus.layout import embedded_corpus_dir as where

    return where(profile, seed)


# ------------------------------------------------------------------ corpus commands
def _corpus_build(args: argparse.Namespace) -> int:
    from .corpus.build import build, format_statistics

    out = Path(args.out) if args.out else embedded_corpus_dir(args.profile, args.seed)
    meta = build(out, args.profile, args.seed, workers=args.workers, progress=not args.quiet)
    took = meta.get("build_seconds")
    print(f"corpus: {out}  (profile {meta['profile']}, seed {meta['seed']}, "
          f"{len(meta['speakers'])} speakers, {len(meta['phone_inventory'])} phone labels"
          + (f", built in {took:.1f} s" if took is not None else ", already built") + ")")
    print(format_statistics(meta["statistics"]))
    return 0


def _corpus_check(args: argparse.Namespace) -> int:
    from .corpus.manifest import check_manifest

    root = Path(args.dir) if args.dir else embedded_corpus_dir()
    n = check_manifest(root)
    print(f"ok: {n} files match {root}/manifest.sha256")
    return 0


def _corpus_info(args: argparse.Namespace) -> int:
    import json

    from .corpus.build import format_statistics
    from .errors import HarnessError

    root = Path(args.dir) if args.dir else embedded_corpus_dir()
    meta_path = root / "corpus.json"
    if not meta_path.exists():
        raise HarnessError(f"{root} is not a built harness corpus (no corpus.json); run `harness corpus build`")
    meta = json.loads(meta_path.read_text())
    if args.speakers:
        for s in meta["speakers"]:
            extra = "" if s["variant_text"] is None else "  [own variant: " + "; ".join(
                line for line in s["variant_text"].splitlines()[3:] if line) + "]"
            print(f"{s['index']:3d} {s['gender']} {s['language']:<15}{s['variant']:<12}rate {s['rate']:3d} "
                  f"pitch {s['pitch']:2d} range {s['pitch_range']:2d}{extra}")
        return 0
    print(f"{root}: profile {meta['profile']}, seed {meta['seed']}, espeak-ng {meta['espeak_ng']}, "
          f"{len(meta['speakers'])} speakers")
    print(format_statistics(meta["statistics"]))
    return 0


# --------------------------------------------------------------- upstream commands
def _upstreams_list(args: argparse.Namespace) -> int:
    from .registry import backend_names, cards

    rows = [(c.name, c.spec, str(c.layers), str(c.dim if isinstance(c.dim, int) else "/".join(map(str, c.dim))),
             str(c.hop or "-"), c.licence) for c in cards().values()]
    head = ("name", "spec", "layers", "dim", "hop", "licence")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    print(f"\nbackends for BACKEND:SOURCE specs: {', '.join(backend_names())}")
    return 0


def _upstreams_fetch(args: argparse.Namespace) -> int:
    from .registry import load_backend, parse_spec

    backend, source, _ = parse_spec(args.name)
    said = load_backend(backend).fetch(source)
    print(said if said else f"{args.name}: backend {backend} needs no download")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from .extract import extract_file
    from .upstream import load_upstream

    upstream = load_upstream(args.upstream, random_init=args.random_init, seed=args.seed)
    summary = extract_file(upstream, args.wav, args.out)
    print(f"{args.out}: {summary['layers']} layers "
          + ", ".join(f"{n} {s[0]}x{s[1]}" for n, s in zip(summary["names"], summary["shapes"])))
    return 0


def _ship_selection(args) -> tuple[list[int] | None, list[int] | None]:
    """--ship-every (intervals) and --ship-steps (explicit steps), parsed and checked."""
    from .errors import HarnessError

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

    from .config import merge_config, parse_overrides
    from .errors import HarnessError

    every, keep = _ship_selection(args)  # checked before anything: a typo must not cost the run
    module = importlib.import_module({"hubert": ".pretrain", "wav2vec2": ".pretrain_wav2vec2",
                                      "dino": ".pretrain_dino"}[args.recipe], __package__)
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
        from .pretrain import ship

        shipped = ship(Path(args.out), Path(args.ship), every[0] if every and len(every) == 1 else every, steps=keep)
        print(f"shipped {len(shipped)} float16 checkpoints to {args.ship}")
    return 0


def _check_names(args: argparse.Namespace) -> None:
    """Upstream and task names resolved before any heavy import (a typo costs milliseconds)."""
    from .errors import HarnessError
    from .registry import parse_spec, task_names

    if bool(args.upstream) == bool(args.checkpoints):
        raise HarnessError("give exactly one of --upstream or --checkpoints")
    if args.task not in task_names():
        raise HarnessError(f"unknown task {args.task!r}; available: {', '.join(task_names())}")
    if args.upstream:
        parse_spec(args.upstream)
    if args.data_root and not Path(args.data_root).is_dir():
        raise HarnessError(f"--data-root {args.data_root} does not exist or is not a directory")


def _request(args: argparse.Namespace, spec: str):
    from .config import parse_overrides
    from .engine import RunRequest

    devices: str | int = args.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    return RunRequest(
        upstream=spec, task=args.task, layer=args.layer, data_root=Path(args.data_root) if args.data_root else None,
        out=Path(args.out), seed=args.seed, max_steps=args.max_steps, overrides=parse_overrides(args.set or []),
        cache="none" if args.no_cache else args.cache, random_init=args.random_init, init_seed=args.init_seed,
        devices=devices, num_nodes=args.num_nodes, strategy=args.strategy, accelerator=args.accelerator,
        workers=args.workers, progress=not args.quiet,
    )


def _run(args: argparse.Namespace) -> int:
    _check_names(args)
    from .engine import run
    from .upstream import UpstreamPool

    pool = UpstreamPool()
    if args.checkpoints:
        from .registry import resolve_checkpoints
        from .trajectory import probe_trajectory

        specs = resolve_checkpoints(args.checkpoints)
        records = {spec: run(_request(args, spec), pool) for spec in specs}
        if any(records.values()):
            csv_path, png = probe_trajectory(records, Path(args.out) / f"trajectory_{args.task}.csv")
            print(f"{len(specs)} checkpoints; checkpoint x layer grid: {csv_path} and {png}")
        return 0
    paths = run(_request(args, args.upstream), pool)
    if paths:
        from .records import read_record

        print(f"{'probe':<14}{'dev':>10}{'test':>10}  metric   (records in {paths[0].parent})")
        for p in paths:
            r = read_record(p)
            name = r.metric.name
            print(f"{r.probe:<14}{r.dev[name]:>10.4f}{r.test[name]:>10.4f}  {name}"
                  + ("  weights " + " ".join(f"{w:.2f}" for w in r.layer_weights) if r.layer_weights else ""))
    return 0


def _plan(args: argparse.Namespace) -> int:
    """What `harness run` with the same arguments would extract and store, without doing it."""
    _check_names(args)
    from .engine import cache_plan, finished_records, prepare
    from .planning import time_extraction

    if args.checkpoints:
        from .errors import HarnessError

        raise HarnessError("harness plan takes --upstream (plan one checkpoint at a time)")
    plan = prepare(_request(args, args.upstream))
    fp = cache_plan(plan)
    if not args.no_timing:
        fp.extraction_rate = time_extraction(plan.upstream, plan.examples["dev"])
    done = finished_records(plan)
    if done:
        fp.notes.append(f"this run is already finished: its records are in {done[0].parent}")
    print(fp.format())
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from .benchmark import leaderboards, load_config, load_study, run_benchmark, summary

    jobs = load_config(Path(args.config))
    study = load_study(Path(args.config))
    outcomes = run_benchmark(jobs, progress=not args.quiet)
    print(summary(outcomes))
    for path in leaderboards(outcomes):
        print(f"leaderboard: {path} (and {path.with_name('index.html')})")
    if study is not None:
        from .study import build

        labels = {f"{u} (random init)" if job.random_init else u for job in jobs for u in job.upstreams}
        page = build(study, Path(jobs[0].out), jobs[0].data_root, progress=not args.quiet, labels=labels)
        print(f"study: {page} (and {page.with_name('index.html')})")
    reused = sum(o.reused for o in outcomes)
    print(f"{len(outcomes)} runs ({reused} already finished, {len(outcomes) - reused} trained)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .fsutil import write_text
    from .report import format_table, load_records, plot, plot_name, rank

    rankings = rank(load_records(Path(args.results), args.upstream, args.task))
    text = format_table(rankings, args.format)
    if args.output:
        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    if args.plots:
        for r in rankings:
            if r.layers:
                plot(r, Path(args.plots) / plot_name(r))
        print(f"plots in {args.plots}", file=sys.stderr)
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard import build

    paths = build(Path(args.results), Path(args.out or args.results))
    print("wrote " + ", ".join(str(p) for p in paths[:3]) + f" and {len(paths) - 3} plots")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from .errors import HarnessError
    from .recommend import choose, costs, export
    from .report import load_records, rank

    rankings = [r for r in rank(load_records(Path(args.results), args.upstream, args.task)) if r.layers]
    if not rankings:
        raise HarnessError(f"no single-layer results for {args.upstream} / {args.task}; run `harness run --layer all` first")
    if len(rankings) > 1:
        print(f"note: {len(rankings)} settings found; using setting {rankings[0].setting}", file=sys.stderr)
    r = rankings[0]
    pick = choose(r, args.tolerance)
    best = r.best
    rule = "not significantly worse than the best (paired bootstrap, 95%)" if args.tolerance is None else \
        f"within {args.tolerance} {r.metric} of the best"
    print(f"{r.label} · {r.task}: best layer {best.layer} ({best.name}) {r.metric} {best.score:.4f} "
          f"[{best.ci_low:.4f}, {best.ci_high:.4f}]")
    print(f"recommended layer: {pick.layer} ({pick.name}) {r.metric} {pick.score:.4f} "
          f"[{pick.ci_low:.4f}, {pick.ci_high:.4f}]: the lowest layer {rule}")
    spec = r.upstream.spec
    pair = None if r.upstream.random_init else costs(spec, int(pick.layer))
    if pair:
        full, cut = pair
        print(f"{'':18}{'params':>12}{'GFLOPs/s audio':>16}{'CPU ms / 10 s':>15}")
        print(f"{'full model':18}{full.params:>12,}{full.gflops_per_second:>16.2f}{full.latency_ms:>15.1f}")
        print(f"{'truncated at ' + str(pick.layer):18}{cut.params:>12,}{cut.gflops_per_second:>16.2f}{cut.latency_ms:>15.1f}")
        print(f"saves {1 - cut.params / full.params:.0%} of parameters, {1 - cut.gflops_per_second / full.gflops_per_second:.0%} "
              f"of FLOPs, {1 - cut.latency_ms / full.latency_ms:.0%} of CPU time")
    else:
        print("(cost comparison is available for hf: upstreams with pretrained weights)")
    if args.export:
        out = export(spec, int(pick.layer), Path(args.export))
        print(f"exported the model truncated after layer {pick.layer} to {out} (load it with --upstream hf:{out})")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .corpus.layout import require_embedded_corpus
    from .errors import HarnessError
    from .registry import parse_spec, resolve_checkpoints

    data_root = Path(args.data_root) if args.data_root else require_embedded_corpus()
    checkpoints = resolve_checkpoints(args.checkpoints) if getattr(args, "checkpoints", None) else None
    for spec in [args.upstream, getattr(args, "against", None)] + (checkpoints or []):
        if spec:
            parse_spec(spec)
    out = Path(args.out or f"{args.measure}{'_' + args.property if getattr(args, 'property', None) else ''}.csv")
    if args.measure in ("cca", "svcca"):
        from .analysis import RELATIVE_EPSILONS, CcaProtocol, run_cca

        specs = checkpoints or ([args.upstream] if args.upstream else None)
        if not specs:
            raise HarnessError("give --upstream or --checkpoints")
        epsilons = tuple(args.epsilons) if args.epsilons else (
            CcaProtocol.epsilons if args.convention == "reference" else RELATIVE_EPSILONS)
        protocol = CcaProtocol(measure="svcca" if args.measure == "svcca" else "pwcca", convention=args.convention,
                               weights=getattr(args, "weights", "smaller"), folds=args.folds, trials=args.trials,
                               epsilons=epsilons)
        path, summary = run_cca(specs, args.property, data_root, args.split, out, args.random_init, protocol,
                                args.max_samples, args.top_words, args.per_label, args.limit, args.seed,
                                progress=not args.quiet)
        name = "PWCCA" if args.measure == "cca" else "SVCCA"
        print(f"{'checkpoint':<40}{'layer':>6}{name:>9}{'std':>8}{'eps (layer/prop)':>18}{'failed':>8}")
        for r in summary:
            print(f"{str(r['checkpoint'])[-40:]:<40}{r['layer']:>6}{r['mean']:>9.4f}{r['std']:>8.4f}"
                  f"{str(r['epsilon']):>18}{r['failed_fits']:>8}")
        failures = [r for r in summary if r["failed_fits"]]
        if failures:
            print(f"{sum(r['failed_fits'] for r in failures)} fits failed (rows kept in the CSV with their error); "
                  f"first: layer {failures[0]['layer']}, {failures[0]['first_error']}")
        if all(r["n"] == 0 for r in summary):
            raise HarnessError(f"no CCA fit succeeded: {summary[0]['first_error']}")
        print(f"rows: {path}; summary: {path.with_name(path.stem + '.summary.csv')}; plot: {path.with_suffix('.png')}")
        return 0
    if not args.upstream and not checkpoints:
        raise HarnessError("give --upstream")
    if args.measure == "cka":
        from .analysis import run_cka

        path = run_cka(args.upstream, args.against, data_root, args.split, out, args.random_init, args.max_samples,
                       args.limit, args.seed, checkpoints=checkpoints, progress=not args.quiet, minibatch=args.minibatch,
                       with_pwcca=args.pwcca)
        print(f"rows: {path}; heatmap: {path.with_suffix('.png')}")
        return 0
    if args.measure == "neurons":
        from .neurons import run_neurons

        path = run_neurons(args.upstream, args.against, data_root, args.split, out, args.random_init,
                           args.max_samples, args.limit, args.seed, prop=args.property, progress=not args.quiet)
        extra = f"; top/random/bottom-k check: {path.with_name(path.stem + '.check.csv')}" if args.property else ""
        print(f"rows: {path}{extra}; plot: {path.with_suffix('.png')}")
        return 0
    from .attention import run_attention

    path = run_attention(args.upstream, args.against, data_root, args.split, out, args.limit or 20, args.random_init,
                         progress=not args.quiet)
    print(f"rows: {path}; layer x layer heatmap: {path.with_suffix('.png')}; heads: "
          f"{path.with_name(path.stem + '.heads.png')}")
    return 0


def _trajectory(args: argparse.Namespace) -> int:
    from .analysis import to_csv
    from .errors import HarnessError
    from .fsutil import write_text

    out = Path(args.out)
    if args.action == "emergence":
        from .emergence import emergence_rows, plot_emergence

        series = {}
        for item in args.series:
            name, sep, folder = item.partition("=")
            if not sep or not Path(folder).is_dir():
                raise HarnessError(f"--series takes NAME=RESULTS_FOLDER (an existing folder), got {item!r}")
            series[name] = Path(folder)
        rows = emergence_rows(series, args.tasks, args.bootstrap)
        write_text(out, to_csv(rows))
        plot_emergence(rows, out.with_suffix(".png"))
        print(f"{'objective':<12}{'task':<10}{'layer':>6}{'t50':>9}{'95% CI':>22}{'start':>8}{'plateau':>9}  direction")
        for r in rows:
            interval = f"[{r['t50_low']:.0f}, {r['t50_high']:.0f}]"
            print(f"{r['objective']:<12}{r['task']:<10}{r['layer']:>6}{r['t50']:>9.0f}{interval:>22}"
                  f"{r['start']:>8.4f}{r['plateau']:>9.4f}  {r['direction']}")
        print(f"rows: {out}; figure: {out.with_suffix('.png')}")
        return 0
    import csv

    from .emergence import autoencoder_rows

    def read(path: str) -> list[dict]:
        try:
            return list(csv.DictReader(open(path)))
        except OSError as exc:
            raise HarnessError(f"cannot read {path}: {exc.strerror}") from None

    rows = autoencoder_rows(read(args.mel), read(args.word))
    write_text(out, to_csv(rows))
    for r in rows:
        print(f"{Path(str(r['checkpoint'])).name:<28} top layer {r['top_layer']}: mel {r['mel_top']:.3f} "
              f"(rebound {r['mel_rebound']:+.3f}, peak layer {r['mel_peak_layer']}), words {r['word_top']:.3f} "
              f"(drop {r['word_drop']:+.3f}, peak layer {r['word_peak_layer']})")
    print(f"rows: {out}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import yaml

    from .config import merge_config, parse_overrides
    from .corpus.layout import require_embedded_corpus
    from .errors import HarnessError
    from .finetune import default_recipe, finetune
    from .registry import parse_spec

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


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Which layer of a speech model should you use for a task, and why.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    ups = sub.add_parser("upstreams", help="list the upstream registry, or prefetch weights",
                         description="Registry of named upstreams (cards) with layer counts; any "
                                     "BACKEND:SOURCE spec works too (hf:, s3prl:, torchaudio:, speechbrain:, classic:).")
    usub = ups.add_subparsers(dest="upstreams_command", metavar="ACTION")
    ups.set_defaults(func=_upstreams_list)
    uf = usub.add_parser("fetch", help="download a model's weights into its backend cache (needs network)",
                         description="Prefetch weights on a connected machine for later offline use.")
    uf.add_argument("name", help="registry name or BACKEND:SOURCE")
    uf.set_defaults(func=_upstreams_fetch)

    ex = sub.add_parser("extract", help="write every layer of one file to an .npz",
                        description="Run an upstream on one 16 kHz file and write layer_0 ... layer_{L-1}, "
                                    "each float32 [frames, dim].")
    ex.add_argument("--upstream", required=True, help="registry name or BACKEND:SOURCE (see `harness upstreams`)")
    ex.add_argument("--wav", required=True, help="16 kHz audio file")
    ex.add_argument("--out", required=True, help="output .npz")
    ex.add_argument("--random-init", action="store_true", help="same architecture, random weights (probing control)")
    ex.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    ex.set_defaults(func=_extract)

    rn = sub.add_parser("run", help="train task heads on one layer, a weighted sum, or every layer",
                        description="Train SUPERB-style heads on cached features of an upstream and write one "
                                    "JSON record per layer setting. Re-running resumes from the last checkpoint.")
    _add_run_arguments(rn)
    rn.set_defaults(func=_run)

    pl_ = sub.add_parser("plan", help="what `harness run` with these arguments would extract and store",
                         description="Print the run's feature-cache plan without doing anything: hours and "
                                     "utterances per split, cache bytes per split and in total, the free space, "
                                     "whether it fits, the chosen mode, and an extraction-time estimate from "
                                     "timing a small sample here. Takes the arguments of `harness run`.")
    _add_run_arguments(pl_)
    pl_.add_argument("--no-timing", action="store_true", help="skip timing the extraction on a sample")
    pl_.set_defaults(func=_plan)

    bm = sub.add_parser("benchmark", help="many runs in one process from a YAML file (e.g. benchmarks/quick.yaml)",
                        description="Run every (upstream, task) listed in a benchmark config in one process, "
                                    "loading each upstream once and skipping finished runs; then regenerate the "
                                    "leaderboard and print the best layers. See harness/benchmark.py for the format.")
    bm.add_argument("config", help="benchmark YAML (benchmarks/quick.yaml: the default main job; "
                    "benchmarks/full.yaml: every committed result)")
    bm.add_argument("--quiet", action="store_true", help="no progress bars (one line per run is still printed)")
    bm.set_defaults(func=_benchmark)

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
    pt.add_argument("--config", help="YAML recipe merged over the default (harness/pretrain.yaml)")
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

    rp = sub.add_parser("report", help="rank layers per upstream and task with 95%% confidence intervals",
                        description="Rank layers by test metric with bootstrap CIs over test utterances (and seeds), "
                                    "mark the layers not significantly worse than the best, show the weighted sum.")
    rp.add_argument("--results", default="results", help="records folder (default: results)")
    rp.add_argument("--upstream", help="only this upstream spec")
    rp.add_argument("--task", help="only this task")
    rp.add_argument("--format", choices=["table", "csv", "json", "markdown"], default="table")
    rp.add_argument("--output", help="write to this file instead of the terminal")
    rp.add_argument("--plots", help="also write metric-vs-layer PNGs to this folder")
    rp.set_defaults(func=_report)

    lb = sub.add_parser("leaderboard", help="regenerate LEADERBOARD.md, leaderboard.csv and index.html",
                        description="Regenerate the leaderboard from the records alone (byte-identical for the same records).")
    lb.add_argument("--results", default="results", help="records folder (default: results)")
    lb.add_argument("--out", help="output folder (default: the results folder)")
    lb.set_defaults(func=_leaderboard)

    rc = sub.add_parser("recommend", help="the layer to fine-tune from or truncate at, and what it saves",
                        description="Lowest layer within tolerance of the best; parameters, FLOPs and CPU latency of "
                                    "the truncated vs the full model; optional export of the truncated model.")
    rc.add_argument("--results", default="results")
    rc.add_argument("--upstream", required=True)
    rc.add_argument("--task", required=True)
    rc.add_argument("--tolerance", type=float, help="max metric difference from the best (default: not significantly worse)")
    rc.add_argument("--export", help="write the truncated model here (HF directory)")
    rc.set_defaults(func=_recommend)

    an = sub.add_parser("analyze", help="CCA/SVCCA with properties, CKA, neuron- and attention-level similarity",
                        description="Layer-wise analyses through the feature cache; one tidy CSV and one picture per "
                                    "call.")
    asub = an.add_subparsers(dest="measure", metavar="MEASURE")
    helps = {"cca": "projection-weighted CCA (published protocol) of every layer with a property",
             "svcca": "SVCCA (SVD to 99%% of variance, then mean CCA) of every layer with a property",
             "cka": "linear CKA (biased and debiased, or mini-batch) for every layer pair",
             "neurons": "MaxCorr/MinCorr/LinReg for every layer pair, or neurons ranked for phone identity",
             "attention": "attention heads compared (JS, Pearson, Frobenius; best-match pairing) layer by layer"}
    for name, helptext in helps.items():
        ap = asub.add_parser(name, help=helptext, description=helptext.replace("%%", "%"))
        ap.add_argument("--upstream", help="registry name or BACKEND:SOURCE")
        if name in ("cca", "svcca", "cka"):
            ap.add_argument("--checkpoints", nargs="+", help="several checkpoints of one model (paths, globs or "
                            "names): checkpoint x layer grid")
        ap.add_argument("--data-root", help="corpus root with LibriSpeech alignments (default: embedded corpus)")
        ap.add_argument("--split", default="dev", help="LibriSpeech split (default dev)")
        ap.add_argument("--limit", type=int, help="use only the first N utterances")
        ap.add_argument("--random-init", action="store_true")
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--out", help="tidy CSV (a PNG is written next to it)")
        ap.add_argument("--quiet", action="store_true")
        ap.add_argument("--max-samples", type=int, default=20000, help="frames/segments kept (default 20000)")
        if name in ("cca", "svcca"):
            ap.add_argument("--property", choices=["mel", "phone", "syllable", "word", "position", "speaker"],
                            required=True)
            ap.add_argument("--folds", type=int, default=10, help="label-stratified folds (default 10)")
            ap.add_argument("--trials", type=int, default=3, help="trials, each with its own dev and test fold (3)")
            ap.add_argument("--convention", choices=["reference", "relative"], default="reference",
                            help="regularisation: reference = epsilon x max|C| per view, flat dims dropped "
                                 "(published code; default); relative = epsilon x mean variance")
            ap.add_argument("--epsilons", type=float, nargs="+", help="epsilon grid per view (default: 1e-11 1e-9 "
                            "1e-7 1e-5 for reference, 0 1e-6 1e-4 1e-3 1e-2 1e-1 for relative)")
            ap.add_argument("--top-words", type=int, default=500)
            ap.add_argument("--per-label", type=int, default=200, help="max samples per phone/word (default 200)")
            if name == "cca":
                ap.add_argument("--weights", choices=["smaller", "x", "y"], default="smaller",
                                help="PWCCA weights from the view with fewer neurons (published; default), the "
                                     "layer (x) or the property (y)")
        if name in ("cka", "neurons", "attention"):
            ap.add_argument("--against", help="a second upstream (default: the same model)")
        if name == "cka":
            ap.add_argument("--minibatch", type=int, default=0, help="mini-batch CKA (Nguyen et al. 2021) over every "
                            "frame in batches of this many frames, reading one utterance at a time (default: off)")
            ap.add_argument("--pwcca", action="store_true", help="also held-out PWCCA of every layer pair (fitted "
                            "on a random half of the frames, scored on the other; epsilon 1e-9 x max|C| per view)")
        if name == "neurons":
            ap.add_argument("--property", choices=["phone"], help="rank each layer's neurons for phone identity "
                            "instead of comparing layers")
        ap.set_defaults(func=_analyze)

    tr = sub.add_parser("trajectory", help="emergence of each level over pretraining checkpoints (sigmoid fits), "
                        "and the top layers' drift back toward the input",
                        description="emergence: fit a sigmoid to each (series, task, layer) curve of test scores "
                                    "over checkpoints (step 0 = the random-weights run) with bootstrap intervals; "
                                    "autoencoder: compare CCA with mel and with words per checkpoint.")
    trs = tr.add_subparsers(dest="action", metavar="ACTION")
    em = trs.add_parser("emergence", help="fitted emergence steps per level and layer (CSV + figure)")
    em.add_argument("--series", nargs="+", required=True, metavar="NAME=FOLDER",
                    help="checkpoint series: records folders of `harness run --checkpoints` plus a --random-init run")
    em.add_argument("--tasks", nargs="+", required=True, help="the levels' tasks, e.g. phone syllable word position")
    em.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates over test items (default 200)")
    em.add_argument("--out", required=True, help="tidy CSV (a PNG is written next to it)")
    em.set_defaults(func=_trajectory)
    ae = trs.add_parser("autoencoder", help="top layers' CCA with mel vs with words, per checkpoint")
    ae.add_argument("--mel", required=True, help="summary CSV of `harness analyze cca --checkpoints ... --property mel`")
    ae.add_argument("--word", required=True, help="summary CSV of the same with --property word")
    ae.add_argument("--out", required=True, help="tidy CSV")
    ae.set_defaults(func=_trajectory)

    ft = sub.add_parser("finetune", help="CTC fine-tuning of a whole upstream (saved as an upstream)",
                        description="Fine-tune a HuggingFace wav2vec2-family upstream end to end with a linear CTC "
                                    "head on the task's tokens (asr: characters, pr: phones). Resumable; every "
                                    "checkpoint is a model directory usable as hf:DIR.")
    ft.add_argument("--upstream", required=True, help="registry name or hf:SOURCE")
    ft.add_argument("--task", default="asr", choices=["asr", "pr"], help="CTC task whose tokens and data to use")
    ft.add_argument("--out", required=True, help="output folder")
    ft.add_argument("--data-root", help="corpus root (default: the embedded corpus)")
    ft.add_argument("--config", help="YAML recipe merged over the default (harness/finetune.yaml)")
    ft.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value (repeatable)")
    ft.add_argument("--steps", type=int, help="training steps")
    ft.add_argument("--freeze-cnn", dest="freeze_cnn", action="store_true", default=None,
                    help="keep the waveform CNN frozen (default)")
    ft.add_argument("--no-freeze-cnn", dest="freeze_cnn", action="store_false", help="train the CNN too")
    ft.add_argument("--reinit-top", type=int, help="re-initialise the top K transformer layers first")
    ft.add_argument("--quiet", action="store_true")
    ft.set_defaults(func=_finetune)
    return parser


def _add_run_arguments(rn: argparse.ArgumentParser) -> None:
    rn.add_argument("--upstream", help="registry name or BACKEND:SOURCE")
    rn.add_argument("--checkpoints", nargs="+", help="instead of --upstream: several checkpoints of one model (paths, "
                    "globs or names); writes a checkpoint x layer grid (CSV + heatmap) of the test metric")
    rn.add_argument("--task", required=True, help="asr, pr, phone, ic (alias slu), sid, asv, ks or er "
                    "(or a plugin's task)")
    rn.add_argument("--layer", default="all", help="N | weighted | A-B | 1,4,7 | all (every layer + weighted; default)")
    rn.add_argument("--data-root", help="corpus root (default: the embedded corpus)")
    rn.add_argument("--out", default="results", help="records go to OUT/UPSTREAM/TASK/ (default: results)")
    rn.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    rn.add_argument("--max-steps", type=int, help="training steps (default: the task's YAML)")
    rn.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a task config value (repeatable)")
    rn.add_argument("--cache", choices=["disk", "auto", "none"], default="disk",
                    help="disk: extract the needed layers once and train from the cache, refused when it would not "
                         "fit (default); auto: disk when it fits, else none; none: run the upstream inside every "
                         "step (no disk)")
    rn.add_argument("--no-cache", action="store_true", help="same as --cache none (as s3prl does)")
    rn.add_argument("--random-init", action="store_true", help="the upstream's architecture with random weights")
    rn.add_argument("--init-seed", type=int, default=0, help="seed of --random-init weights (default 0)")
    rn.add_argument("--devices", default="1", help="training processes per node, passed to Lightning (default 1)")
    rn.add_argument("--num-nodes", type=int, default=1, help="nodes, passed to Lightning (default 1)")
    rn.add_argument("--strategy", default="auto", help="passed to Lightning, e.g. ddp, ddp_spawn")
    rn.add_argument("--accelerator", default="cpu", help="passed to Lightning: cpu, gpu, auto (default cpu)")
    rn.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    rn.add_argument("--quiet", action="store_true", help="no progress bars")


def _quiet_dependencies() -> None:
    """Keep third-party deprecation chatter and weight-loading bars off the user's terminal."""
    import os
    import warnings

    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(?!harness)")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import logging

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric", "speechbrain"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Terminated(BaseException):
    """SIGTERM reached the harness's main process (a scheduler's or a user's kill)."""


def _on_sigterm(main_pid: int) -> Callable:
    def handler(signum, frame) -> None:
        if os.getpid() != main_pid:  # a forked worker (DataLoader, corpus synthesis): leave quietly
            os._exit(128 + signal.SIGTERM)
        raise Terminated()
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import HarnessError

    _quiet_dependencies()
    # Lightning's own SIGTERM handling ends fit() with a SystemExit of code 0, so a killed run
    # looked successful; ours runs too (Lightning chains handlers it finds) and ends with 143.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `harness` or `harness corpus` alone: show the relevant help
        target = parser
        if args.command:
            target = next(a for a in parser._subparsers._group_actions[0].choices.values()
                          if a.prog.endswith(args.command))
        target.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("harness: terminated (SIGTERM); re-run the same command to resume", file=sys.stderr)
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
