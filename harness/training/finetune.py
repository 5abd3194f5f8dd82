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

Deterministic and resumable: batches, masks and dropout come from generators seeded by
(seed, step), so a resumed run takes the same steps as an uninterrupted one (tested).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.audio import SAMPLE_RATE
from harness.errors import HarnessError
from harness.fsutil import atomic_dir, atomic_path, write_text


def default_recipe() -> dict:
    import yaml

    return yaml.safe_load(resources.files("harness.training").joinpath("finetune.yaml").read_text())


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
    from harness.heads import ctc_greedy
    from harness.metrics import error_counts, error_rate
    from harness.upstream import normalise_waveforms, pad_batch

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


def finetune(spec: str, task_name: str, data_root: Path, out: Path, recipe: dict, progress: bool = True) -> Path:
    """Fine-tune ``spec`` with CTC on ``task_name``'s tokens; return the final encoder folder."""
    import yaml
    from safetensors.torch import save_file
    from tqdm import tqdm

    from harness.audio import read_audio
    from harness.registry import load_task
    from harness.task import task_config
    from harness.tasks.families import CtcTask
    from harness.upstream import load_upstream, normalise_waveforms, pad_batch

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
    lengths = [len(w) for w in waves]
    seed, steps = int(recipe["seed"]), int(recipe["steps"])

    from transformers import AutoConfig, AutoModel

    def training_model(folder: Path):
        """The model with fine-tuning's time masks on (HF then creates the mask embedding,
        loaded from the checkpoint when pretraining saved one)."""
        config = AutoConfig.from_pretrained(folder)
        config.apply_spec_augment = recipe["mask_time_prob"] > 0
        config.mask_time_prob = float(recipe["mask_time_prob"])
        config.mask_time_length = int(recipe["mask_time_length"])
        config.mask_time_min_masks = 1
        config.layerdrop = 0.0
        torch.manual_seed(seed)  # an embedding the checkpoint lacks is drawn reproducibly
        return AutoModel.from_pretrained(folder, config=config, dtype=torch.float32)

    model = training_model(upstream.folder)
    torch.manual_seed(seed)
    head = nn.Linear(model.config.hidden_size, len(task.tokens) + 1)
    state_path = out / "state.pt"
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model = training_model(out / state["checkpoint"])
        head.load_state_dict(state["head"])
        start = int(state["step"])
    else:
        state = None
        _reinit_top(model, int(recipe["reinit_top"]), seed)
    model.train()
    if recipe["freeze_cnn"]:
        for p in model.feature_extractor.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=float(recipe["lr"]), betas=(0.9, 0.98), eps=1e-8,
                                  weight_decay=float(recipe["weight_decay"]))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    warmup = int(recipe["warmup_steps"])
    freeze_transformer = int(recipe["freeze_transformer_steps"])

    def lr_at(step: int) -> float:  # linear warm-up, then linear decay to 0 (the fine-tuning schedule)
        if step < warmup:
            return float(recipe["lr"]) * (step + 1) / warmup
        return float(recipe["lr"]) * max(0.0, (steps - step) / max(1, steps - warmup))

    log_path = out / "log.jsonl"
    log = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    log = [r for r in log if r["step"] <= start]
    normalize = upstream.normalize
    every, log_every = int(recipe["checkpoint_every"]), int(recipe["log_every"])
    window = {"loss": 0.0, "n": 0}
    t0 = time.time()
    bar = tqdm(total=steps, initial=start, desc=f"fine-tuning {spec} ({task_name})", unit="step", disable=not progress)
    for step in range(start, steps):
        torch.manual_seed(seed * 1_000_003 + step)  # dropout
        np.random.seed((seed * 1_000_003 + step) % (2 ** 32))  # HF draws the time masks with numpy
        idx = _batch_at(lengths, float(recipe["batch_seconds"]), seed, step)
        x, wave_lengths = pad_batch([torch.from_numpy(waves[i]) for i in idx])
        if normalize:
            x = normalise_waveforms(x, wave_lengths)
        mask = (torch.arange(x.shape[1])[None, :] < wave_lengths[:, None]).long()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        frozen = step < freeze_transformer
        with torch.set_grad_enabled(True):
            if frozen:
                with torch.no_grad():
                    hidden = model(input_values=x, attention_mask=mask).last_hidden_state
            else:
                hidden = model(input_values=x, attention_mask=mask).last_hidden_state
            log_probs = torch.log_softmax(head(hidden), -1)
            frames = model._get_feat_extract_output_lengths(wave_lengths).long()
            targets = [torch.tensor(train[i].target, dtype=torch.long) for i in idx]
            loss = nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.cat(targets), frames,
                                          torch.tensor([len(t) for t in targets]), blank=0, zero_infinity=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, float(recipe["grad_clip"]))
        optimizer.step()
        window["loss"] += float(loss.detach())
        window["n"] += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            log.append({"step": done, "loss": round(window["loss"] / window["n"], 5), "lr": round(lr_at(step), 8),
                        "batch": len(idx), "seconds": round(time.time() - t0, 1)})
            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
            window = {"loss": 0.0, "n": 0}
        bar.update()
        if done % every == 0 or done == steps:
            dev_err = _error_rate(model, head, dev_waves, [e.target for e in dev], task.tokens, normalize)
            log.append({"step": done, "dev_token_error_rate": round(dev_err, 5)})
            name = f"step_{done:06d}"
            meta = {"step": done, "steps": steps, "task": task_name, "upstream": spec,
                    "dev_token_error_rate": dev_err, "dev_utterances": len(dev)}
            _save(model, head, out / name, meta, normalize, save_file)
            with atomic_path(state_path) as tmp:
                torch.save({"step": done, "checkpoint": name, "head": head.state_dict(),
                            "optimizer": optimizer.state_dict()}, tmp)
            write_text(log_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in log))
    bar.close()
    last = sorted(p for p in out.glob("step_*") if (p / "finetune.json").exists())[-1]
    with atomic_dir(out / "final") as tmp:
        for f in last.iterdir():
            (tmp / f.name).write_bytes(f.read_bytes())
    return out / "final"


def _save(model, head, folder: Path, meta: dict, normalize: bool, save_file) -> None:
    """The encoder as a HuggingFace model directory (an upstream), with the CTC head beside it."""
    from transformers import Wav2Vec2FeatureExtractor

    with atomic_dir(folder) as tmp:
        model.config.apply_spec_augment = False  # as an upstream it extracts, it does not train
        model.save_pretrained(tmp)
        model.config.apply_spec_augment = True
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                 do_normalize=normalize, return_attention_mask=True).save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp / "ctc_head.safetensors"))
        (tmp / "finetune.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
