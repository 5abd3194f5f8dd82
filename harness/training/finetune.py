"""CTC fine-tuning of a whole upstream, as wav2vec 2.0 / HuBERT are fine-tuned for ASR.

A HuggingFace wav2vec2-family model gets a linear CTC head over the task's tokens (the
``asr`` task's characters, or ``pr``'s phones) and is trained end to end on the task's
training split: optionally with the CNN frozen (as in the papers), the transformer frozen
for the first ``freeze_transformer_steps`` (HuBERT's "freeze updates"), and the top
``reinit_top`` transformer layers re-initialised first (the study of the top layers'
'autoencoder' behaviour does this). SpecAugment-style time masks as in fine-tuning.

Output folder::

    OUT/recipe.yaml           the resolved recipe (another recipe refuses to resume here)
    OUT/log.jsonl             loss and learning rate every log_every steps; dev error rate at checkpoints
    OUT/step_000500/          checkpoints: the encoder as a HuggingFace model directory (loads as hf:DIR),
                              plus ctc_head.safetensors and finetune.json (step, dev error rate)
    OUT/final/                the last step's encoder
    OUT/state.pt              optimizer, head and step, for resuming (weights-only loadable)

Trained by the shared loop (`harness.training.loop.fit`) with `CtcObjective`. Deterministic
and resumable: batches, masks and dropout come from generators seeded by
(seed, step), so a resumed run takes the same steps as an uninterrupted one (tested).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm
from transformers import AutoConfig, AutoModel

from harness.audio import SAMPLE_RATE, read_audio
from harness.config import merge_config, parse_overrides
from harness.corpus.layout import require_embedded_corpus
from harness.errors import HarnessError
from harness.fsutil import atomic_dir, write_text
from harness.heads import ctc_greedy
from harness.metrics import error_counts, error_rate
from harness.registry import load_task, parse_spec
from harness.task import task_config
from harness.tasks.families import CtcTask
from harness.training.loop import Objective, fit
from harness.training.runs import merge_recipe_file, packaged_recipe, save_checkpoint
from harness.training.schedules import warmup_linear
from harness.upstream import load_upstream, normalise_waveforms, pad_batch


def default_recipe() -> dict:
    """The default fine-tuning recipe (``harness/training/finetune.yaml``)."""
    return packaged_recipe("harness.training", "finetune.yaml")


def _batches(lengths: list[int], batch_seconds: float, seed: int, epoch: int) -> list[list[int]]:
    """Utterances grouped by length (padded audio per batch <= batch_seconds), order shuffled per epoch."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    jitter = 1.0 + 0.1 * (torch.rand(len(lengths), generator=g) - 0.5)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i] * float(jitter[i]), i))
    batches, current = [], []
    for i in order:
        longest = max([lengths[j] for j in current] + [lengths[i]])
        if current and longest * (len(current) + 1) > batch_seconds * SAMPLE_RATE:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[p] for p in perm]


def _batch_at(lengths: list[int], batch_seconds: float, seed: int, step: int) -> list[int]:
    """The batch of ``step``: epochs of batches laid end to end (stable across restarts)."""
    epoch, before = 0, 0
    while True:
        bs = _batches(lengths, batch_seconds, seed, epoch)
        if step < before + len(bs):
            return bs[step - before]
        before += len(bs)
        epoch += 1


def _reinit_top(model, k: int, seed: int) -> None:
    """Re-initialise the top ``k`` transformer layers as the architecture initialises them:
    linear weights ~ N(0, initializer_range), biases 0, layer norms to identity."""
    if k <= 0:
        return
    layers = model.encoder.layers
    if k > len(layers):
        raise HarnessError(f"reinit_top {k}: the model has only {len(layers)} transformer layers")
    g = torch.Generator().manual_seed(seed)
    std = float(model.config.initializer_range)
    with torch.no_grad():
        for layer in layers[-k:]:
            for module in layer.modules():
                if isinstance(module, nn.Linear):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=g) * std)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()


def _error_rate(model, head, waves, targets, tokens, normalize: bool) -> float:
    """Greedy-CTC token error rate (edits / reference tokens) of the model on some utterances."""
    model.eval()
    refs, hyps = [], []
    with torch.no_grad():
        for start in range(0, len(waves), 8):
            ws = [torch.from_numpy(w) for w in waves[start:start + 8]]
            x, lengths = pad_batch(ws)
            if normalize:
                x = normalise_waveforms(x, lengths)
            mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).long()
            hidden = model(input_values=x, attention_mask=mask).last_hidden_state
            frames = model._get_feat_extract_output_lengths(lengths).long()
            for ids in ctc_greedy(torch.log_softmax(head(hidden), -1), frames):
                hyps.append(" ".join(tokens[i - 1] for i in ids))
        refs = [" ".join(tokens[i - 1] for i in t) for t in targets]
    model.train()
    errors, lens = error_counts(refs, hyps, "word")  # tokens are space-separated: a token error rate
    return error_rate(errors, lens)


class CtcObjective(Objective):
    """CTC loss of a linear head over the encoder's last layer (blank = 0), with the
    transformer frozen for the first ``freeze_transformer_steps`` and the dev token error
    rate measured at every checkpoint."""

    def __init__(self, spec: str, task_name: str, task, train: list, dev: list, waves: list[np.ndarray],
                 dev_waves: list[np.ndarray], source: Path, normalize: bool, recipe: dict) -> None:
        self.spec, self.task_name, self.task, self.train, self.dev = spec, task_name, task, train, dev
        self.waves, self.dev_waves, self.source, self.normalize = waves, dev_waves, source, normalize
        self.description = f"fine-tuning {spec} ({task_name})"
        super().__init__(recipe, grad_clip=recipe["grad_clip"])
        self.lengths = [len(w) for w in waves]
        self.last: dict = {}
        self.dev_err = float("nan")

    def training_model(self, folder: Path):
        """The model with fine-tuning's time masks on (HF then creates the mask embedding,
        loaded from the checkpoint when pretraining saved one)."""
        config = AutoConfig.from_pretrained(folder)
        config.apply_spec_augment = self.recipe["mask_time_prob"] > 0
        config.mask_time_prob = float(self.recipe["mask_time_prob"])
        config.mask_time_length = int(self.recipe["mask_time_length"])
        config.mask_time_min_masks = 1
        config.layerdrop = 0.0
        torch.manual_seed(self.seed)  # an embedding the checkpoint lacks is drawn reproducibly
        return AutoModel.from_pretrained(folder, config=config, dtype=torch.float32)

    def setup(self, resumed: dict | None, folder: Path) -> None:
        recipe = self.recipe
        self.model = self.training_model(self.source)  # the upstream's model directory
        torch.manual_seed(self.seed)
        self.head = nn.Linear(self.model.config.hidden_size, len(self.task.tokens) + 1)
        if resumed is not None:
            self.model = self.training_model(folder / resumed["checkpoint"])
            self.head.load_state_dict(resumed["head"])
        else:
            _reinit_top(self.model, int(recipe["reinit_top"]), self.seed)
        self.model.train()
        if recipe["freeze_cnn"]:
            for p in self.model.feature_extractor.parameters():
                p.requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad] + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=float(recipe["lr"]), betas=(0.9, 0.98), eps=1e-8,
                                           weight_decay=float(recipe["weight_decay"]))
        if resumed is not None:
            self.optimizer.load_state_dict(resumed["optimizer"])

    def step_seed(self, step: int) -> int:
        return self.seed * 1_000_003 + step

    def lr_at(self, step: int) -> float:
        return warmup_linear(step, float(self.recipe["lr"]), int(self.recipe["warmup_steps"]), self.steps)

    def compute_objectives(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        model = self.model
        idx = _batch_at(self.lengths, float(self.recipe["batch_seconds"]), self.seed, step)
        x, wave_lengths = pad_batch([torch.from_numpy(self.waves[i]) for i in idx])
        if self.normalize:
            x = normalise_waveforms(x, wave_lengths)
        mask = (torch.arange(x.shape[1])[None, :] < wave_lengths[:, None]).long()
        if step < int(self.recipe["freeze_transformer_steps"]):  # only the head trains yet
            with torch.no_grad():
                hidden = model(input_values=x, attention_mask=mask).last_hidden_state
        else:
            hidden = model(input_values=x, attention_mask=mask).last_hidden_state
        log_probs = torch.log_softmax(self.head(hidden), -1)
        frames = model._get_feat_extract_output_lengths(wave_lengths).long()
        targets = [torch.tensor(self.train[i].target, dtype=torch.long) for i in idx]
        loss = nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.cat(targets), frames,
                                      torch.tensor([len(t) for t in targets]), blank=0, zero_infinity=True)
        self.last = {"batch": len(idx)}
        return loss, {}

    def log_row(self, window: dict, step: int) -> dict:
        return dict(self.last)

    def evaluate(self, step: int) -> dict:
        self.dev_err = _error_rate(self.model, self.head, self.dev_waves, [e.target for e in self.dev],
                                   self.task.tokens, self.normalize)
        return {"dev_token_error_rate": round(self.dev_err, 5)}

    def meta(self, step: int, log: list[dict]) -> dict:
        return {"step": step, "steps": self.steps, "task": self.task_name, "upstream": self.spec,
                "dev_token_error_rate": self.dev_err, "dev_utterances": len(self.dev)}

    def save(self, folder: Path, meta: dict) -> None:
        _save(self.model, self.head, folder, meta, self.normalize)

    def state(self, step: int, checkpoint: str) -> dict:
        return {"step": step, "checkpoint": checkpoint, "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def finish(self, folder: Path, log: list[dict]) -> Path:
        """``final`` is a copy of the last checkpoint (it holds the last dev error rate)."""
        last = sorted(p for p in folder.glob("step_*") if (p / "finetune.json").exists())[-1]
        with atomic_dir(folder / "final") as tmp:
            for f in last.iterdir():
                (tmp / f.name).write_bytes(f.read_bytes())
        return folder / "final"


def finetune(spec: str, task_name: str, data_root: Path, out: Path, recipe: dict, progress: bool = True) -> Path:
    """Fine-tune ``spec`` with CTC on ``task_name``'s tokens; return the final encoder folder.

    Raises HarnessError for a task that is not a CTC task, an upstream that is not a
    HuggingFace model, a folder holding another run, or ``reinit_top`` beyond the model."""
    out = Path(out)
    task_cls = load_task(task_name)
    if not issubclass(task_cls, CtcTask):
        raise HarnessError(f"harness finetune trains a CTC head: task {task_name!r} is not a CTC task (use asr or pr)")
    upstream = load_upstream(spec)
    if upstream.info.backend != "hf":
        raise HarnessError(f"harness finetune needs a HuggingFace upstream (hf:... or a card of one); {spec} loads "
                           f"through {upstream.info.backend}")
    recipe_text = yaml.safe_dump({"upstream": spec, "task": task_name, **recipe}, sort_keys=True)
    saved = out / "recipe.yaml"
    if saved.exists() and saved.read_text() != recipe_text:
        raise HarnessError(f"{out} holds a fine-tuning run with another recipe; choose another --out")
    if not saved.exists() and out.exists() and any(out.iterdir()):
        raise HarnessError(f"{out} is not empty and holds no fine-tuning run; choose another --out")
    write_text(saved, recipe_text)
    if (out / "final" / "finetune.json").exists():
        return out / "final"

    task = task_cls(task_config(task_cls))
    train = task.examples(data_root, "train")
    dev = task.examples(data_root, "dev")[: int(recipe["dev_utterances"])]
    waves = [read_audio(e.path) for e in tqdm(train, desc="reading audio", unit="utt", disable=not progress,
                                              leave=False)]
    dev_waves = [read_audio(e.path) for e in dev]
    objective = CtcObjective(spec, task_name, task, train, dev, waves, dev_waves, upstream.folder, upstream.normalize,
                             recipe)
    return fit(objective, out, out / "log.jsonl", progress)


def _save(model, head, folder: Path, meta: dict, normalize: bool) -> None:
    """The encoder as a HuggingFace model directory (an upstream), with the CTC head beside it."""
    spec_augment = model.config.apply_spec_augment
    model.config.apply_spec_augment = False  # as an upstream it extracts, it does not train
    try:
        save_checkpoint(model, folder, meta, normalize, "finetune.json", {"ctc_head.safetensors": head.state_dict()})
    finally:
        model.config.apply_spec_augment = spec_augment


@dataclass
class FinetuningResult:
    """What `run_finetuning` made."""

    final: Path  # the last checkpoint's encoder (hf:DIR) with its CTC head
    log: Path
    dev_token_error_rate: float

    def format(self) -> str:
        """The line ``harness finetune`` prints."""
        return (f"fine-tuned encoder: hf:{self.final} (dev token error rate {self.dev_token_error_rate:.4f}); "
                f"log: {self.log}")


def run_finetuning(upstream: str, task: str, out: Path, data_root: Path | None = None, config: Path | None = None,
                   overrides: Sequence[str] = (), steps: int | None = None, freeze_cnn: bool | None = None,
                   reinit_top: int | None = None, progress: bool = True) -> FinetuningResult:
    """``harness finetune``: the default recipe with the YAML ``config``, the ``--set``
    ``overrides`` (``KEY=VALUE``) and the explicit ``steps``/``freeze_cnn``/``reinit_top``
    applied, trained (or resumed) on ``data_root`` (default: the embedded corpus) into ``out``.
    Raises HarnessError (one line) for an unknown upstream, a bad recipe, a missing corpus
    and whatever `finetune` refuses."""
    parse_spec(upstream)
    recipe = merge_recipe_file(default_recipe(), config)
    recipe = merge_config(recipe, parse_overrides(list(overrides)))
    for key, value in (("freeze_cnn", freeze_cnn), ("reinit_top", reinit_top), ("steps", steps)):
        if value is not None:
            recipe[key] = value
    root = Path(data_root) if data_root else require_embedded_corpus()
    final = finetune(upstream, task, root, Path(out), recipe, progress=progress)
    meta = json.loads((final / "finetune.json").read_text())
    return FinetuningResult(final, Path(out) / "log.jsonl", meta["dev_token_error_rate"])
