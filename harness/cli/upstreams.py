"""``harness upstreams`` and ``harness extract``: the upstream registry and every layer of files."""

from __future__ import annotations

import argparse


def _upstreams_list(args: argparse.Namespace) -> int:
    from harness.registry import format_cards

    print(format_cards())
    return 0


def _upstreams_fetch(args: argparse.Namespace) -> int:
    from harness.registry import load_backend, parse_spec

    backend, source, _ = parse_spec(args.name)
    said = load_backend(backend).fetch(source)
    print(said if said else f"{args.name}: backend {backend} needs no download")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from harness.features.device import choose_device
    from harness.features.extract import extract_files, extraction_inputs
    from harness.upstream import load_upstream

    placement = choose_device(args.accelerator, 1, args.precision)  # before loading anything
    extraction_inputs(args.wav)  # a missing folder or an empty list is one line before the model loads
    upstream = load_upstream(args.upstream, random_init=args.random_init, seed=args.seed)
    print(extract_files(upstream, args.wav, args.out, placement, resample=args.resample).format())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the ``harness`` parser."""
    ups = sub.add_parser("upstreams", help="list the upstream registry, or prefetch weights",
                         description="Registry of named upstreams (cards) with layer counts; any "
                                     "BACKEND:SOURCE spec works too (hf:, s3prl:, torchaudio:, speechbrain:, classic:).")
    usub = ups.add_subparsers(dest="upstreams_command", metavar="ACTION")
    ups.set_defaults(func=_upstreams_list)
    uf = usub.add_parser("fetch", help="download a model's weights into its backend cache (needs network)",
                         description="Prefetch weights on a connected machine for later offline use.")
    uf.add_argument("name", help="registry name or BACKEND:SOURCE")
    uf.set_defaults(func=_upstreams_fetch)

    ex = sub.add_parser("extract", help="write every layer of audio files to .npz files",
                        description="Run an upstream on audio files and write layer_0 ... layer_{L-1}, each "
                                    "float32 [frames, dim], to one .npz per file. Audio is read as mono (the "
                                    "channels of a stereo file are averaged) at 16 kHz; other rates are refused "
                                    "unless --resample. Files are batched by length; a rerun keeps the .npz "
                                    "files already written.")
    ex.add_argument("--upstream", required=True, help="registry name or BACKEND:SOURCE (see `harness upstreams`)")
    ex.add_argument("--wav", required=True, help="an audio file, a folder (its .wav/.flac/.ogg files, recursively) "
                    "or a .txt/.lst list of paths, one per line")
    ex.add_argument("--out", required=True, help="the .npz for one file; a folder for several (the inputs' names "
                    "with .npz, mirroring a folder's layout)")
    ex.add_argument("--resample", action="store_true", help="convert other sample rates to 16 kHz (torchaudio's "
                    "resampler) instead of refusing them")
    ex.add_argument("--random-init", action="store_true", help="same architecture, random weights (probing control)")
    ex.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    ex.add_argument("--accelerator", default="auto", help="auto (a GPU when there is one; default), cpu, gpu, mps")
    ex.add_argument("--precision", default="32-true", help="32-true (default), bf16-mixed, 16-mixed (GPU only)")
    ex.set_defaults(func=_extract)

