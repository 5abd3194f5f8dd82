"""``harness analyze``: layer-wise analyses."""

from __future__ import annotations

import argparse
from pathlib import Path

def _analyze(args: argparse.Namespace) -> int:
    from harness.corpus.layout import require_embedded_corpus
    from harness.errors import HarnessError
    from harness.registry import parse_spec, resolve_checkpoints

    data_root = Path(args.data_root) if args.data_root else require_embedded_corpus()
    checkpoints = resolve_checkpoints(args.checkpoints) if getattr(args, "checkpoints", None) else None
    for spec in [args.upstream, getattr(args, "against", None)] + (checkpoints or []):
        if spec:
            parse_spec(spec)
    out = Path(args.out or f"{args.measure}{'_' + args.property if getattr(args, 'property', None) else ''}.csv")
    if args.measure in ("cca", "svcca"):
        from harness.analysis.layerwise import RELATIVE_EPSILONS, CcaProtocol, run_cca

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
        from harness.analysis.layerwise import run_cka

        path = run_cka(args.upstream, args.against, data_root, args.split, out, args.random_init, args.max_samples,
                       args.limit, args.seed, checkpoints=checkpoints, progress=not args.quiet, minibatch=args.minibatch,
                       with_pwcca=args.pwcca)
        print(f"rows: {path}; heatmap: {path.with_suffix('.png')}")
        return 0
    if args.measure == "neurons":
        from harness.analysis.neurons import run_neurons

        path = run_neurons(args.upstream, args.against, data_root, args.split, out, args.random_init,
                           args.max_samples, args.limit, args.seed, prop=args.property, progress=not args.quiet)
        extra = f"; top/random/bottom-k check: {path.with_name(path.stem + '.check.csv')}" if args.property else ""
        print(f"rows: {path}{extra}; plot: {path.with_suffix('.png')}")
        return 0
    from harness.analysis.attention import run_attention

    path = run_attention(args.upstream, args.against, data_root, args.split, out, args.limit or 20, args.random_init,
                         progress=not args.quiet)
    print(f"rows: {path}; layer x layer heatmap: {path.with_suffix('.png')}; heads: "
          f"{path.with_name(path.stem + '.heads.png')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the ``harness`` parser."""
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

