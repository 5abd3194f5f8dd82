"""The files of a training run: recipe, log, optimizer state, checkpoints, shipped copies.

A run folder holds ``recipe.yaml`` (the resolved recipe: another recipe refuses to resume
there), ``log.jsonl`` (one JSON object a line, keys sorted), per stage a ``state.pt``
(weights-only loadable) and checkpoint folders ``step_NNNNNN``. Every file is written to a
unique temporary name and renamed, so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Sequence

import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2FeatureExtractor

from harness.audio import SAMPLE_RATE
from harness.config import merge_config
from harness.errors import HarnessError
from harness.fsutil import atomic_dir, atomic_path, write_text


def packaged_recipe(package: str, name: str) -> dict:
    """The YAML recipe ``name`` shipped inside ``package`` (e.g. ``harness.training``, ``hubert.yaml``)."""
    return yaml.safe_load(resources.files(package).joinpath(name).read_text())


def merge_recipe_file(recipe: dict, path: Path | str | None) -> dict:
    """``recipe`` with the YAML file ``path`` merged over it (nothing when ``path`` is None);
    unknown keys are refused (`harness.config.merge_config`). Raises HarnessError for an
    unreadable file or bad YAML."""
    if not path:
        return recipe
    try:
        return merge_config(recipe, yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise HarnessError(f"cannot read recipe {path}: {exc}") from None


def read_log(path: Path) -> list[dict]:
    """The rows of a ``log.jsonl`` (none when it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_log(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as ``log.jsonl`` (keys sorted), atomically."""
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def save_state(path: Path, state: dict) -> None:
    """``torch.save`` a resume state (tensors, numbers, strings: weights-only loadable), atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_checkpoint(model, folder: Path, meta: dict, normalize: bool = True, meta_name: str = "pretrain.json",
                    tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """Write a HuggingFace model directory atomically (temp dir + rename): the model's
    ``save_pretrained``, a 16 kHz feature-extractor config (``normalize``: each waveform to
    zero mean and unit variance), ``meta`` as JSON (``meta_name``) and, for each
    ``tensors`` entry, a safetensors file of that name (e.g. fine-tuning's CTC head).
    It loads as the upstream ``hf:DIR``."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=normalize,
                                 return_attention_mask=True).save_pretrained(tmp)
        for name, state in (tensors or {}).items():
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / name))
        (tmp / meta_name).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def prepare_run(out: Path, recipe: dict, shared=None) -> None:
    """Claim ``out`` for this recipe: an empty or new folder, or one holding a run of the same
    recipe (resumed); write ``recipe.yaml``. Another recipe is refused with a HarnessError
    (``shared(old, new)`` > 0 adds the --reuse hint), as is a folder holding something else."""
    saved = out / "recipe.yaml"
    if saved.exists():
        previous = yaml.safe_load(saved.read_text())
        if previous != recipe:
            hint = f" and --reuse {out} to keep its iterations that this recipe shares" \
                if shared is not None and shared(previous, recipe) else ""
            raise HarnessError(f"{out} holds a pretraining run with another recipe; choose another --out{hint}")
    elif out.exists() and any(out.iterdir()):
        raise HarnessError(f"{out} is not empty and holds no pretraining run; choose another --out")
    write_text(saved, yaml.safe_dump(recipe, sort_keys=True))


def ship(run: Path, dest: Path, every: int | Sequence[int] | None = None,
         dtype: torch.dtype = torch.float16, steps: Sequence[int] | None = None) -> list[Path]:
    """Copy the checkpoints of a finished run whose step is a multiple of ``every`` (default:
    every saved one; a sequence gives one interval per iteration) and each iteration's last
    step into ``dest``, weights cast to ``dtype`` (float16 halves the size; the hf backend
    loads them as float32), with recipe and log. ``steps`` instead lists the steps to keep
    (each iteration's last is always kept). ``dest`` is replaced as a whole, so no
    checkpoint of an earlier run is left behind in it. Returns the shipped checkpoint folders.

    Raises HarnessError when ``run`` has no finished iteration, ``every`` has another number
    of intervals than finished iterations, or a listed step has no checkpoint."""
    run, dest = Path(run), Path(dest)
    iterations = sorted(p for p in run.glob("it*") if (p / "final" / "pretrain.json").exists())
    if not iterations:
        raise HarnessError(f"{run} holds no finished pretraining iteration")
    intervals = list(every) if isinstance(every, Sequence) else [every] * len(iterations)
    if len(intervals) != len(iterations):
        raise HarnessError(f"--ship-every: {len(intervals)} intervals for {len(iterations)} finished iterations")
    shipped = []
    with atomic_dir(dest) as tmp_dest:
        for it, interval in zip(iterations, intervals):
            saved = sorted(it.glob("step_*"))
            last = saved[-1].name
            if steps is not None and (missing := sorted(set(steps) - {int(c.name.split("_")[1]) for c in saved})):
                raise HarnessError(f"{it.name} has no checkpoint at step(s) {missing}")
            for ck in saved:
                step = int(ck.name.split("_")[1])
                if ck.name != last and ((steps is not None and step not in steps)
                                        or (steps is None and interval and step % interval)):
                    continue
                _ship_checkpoint(ck, tmp_dest / it.name / ck.name, dtype)
                shipped.append(dest / it.name / ck.name)
        for name in ("recipe.yaml", "log.jsonl"):
            shutil.copyfile(run / name, tmp_dest / name)
    return shipped


def _ship_checkpoint(ck: Path, target: Path, dtype: torch.dtype) -> None:
    """One checkpoint folder copied with its floating-point weights cast to ``dtype``."""
    target.mkdir(parents=True)
    for f in ck.iterdir():
        if f.name == "model.safetensors":
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(f).items()}
            save_file(tensors, target / f.name, metadata={"format": "pt"})
        elif f.name == "embedding_model.ckpt":  # a SpeechBrain encoder (the dino recipe)
            state = torch.load(f, map_location="cpu", weights_only=True)
            torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, target / f.name)
        elif f.name == "pretrain.json":
            meta = json.loads(f.read_text())
            meta["stored_dtype"] = str(dtype).replace("torch.", "")
            (target / f.name).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        else:
            shutil.copyfile(f, target / f.name)

