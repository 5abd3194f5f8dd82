"""Named protocols: quick is every task's YAML unchanged, superb is s3prl's published recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.probing.benchmark import load_config
from harness.protocol import choose_protocol, recipe, resolve_recipe
from harness.registry import load_task, task_names

ROOT = Path(__file__).resolve().parent.parent

# Written here from s3prl 0.4.18's published configs (github.com/s3prl/s3prl, tag v0.4.18):
# (downstream/<task>/config.yaml: optimizer, runner.total_steps, runner.eval_step,
# runner.gradient_clipping, runner.gradient_accumulate_steps, datarc batch size, modelrc)
S3PRL = {
    # fluent_commands/config.yaml
    "ic": {"optimizer": "adam", "lr": 1e-4, "batch_size": 32, "accumulate": 1, "max_steps": 200_000,
           "val_interval": 5_000, "grad_clip": 1.0, "head.proj": 256},
    # voxceleb1/config.yaml (datarc.max_timestep 128000 = 8 s crops of training utterances)
    "sid": {"optimizer": "adam", "lr": 1e-4, "batch_size": 8, "accumulate": 4, "max_steps": 200_000,
            "val_interval": 5_000, "grad_clip": 1.0, "head.proj": 256, "crop_seconds": 8.0},
    # speech_commands/config.yaml, expert.py (WeightedRandomSampler, separate test root), dataset.py
    "ks": {"optimizer": "adam", "lr": 1e-4, "batch_size": 32, "accumulate": 1, "max_steps": 200_000,
           "val_interval": 5_000, "grad_clip": 1.0, "head.proj": 256, "balanced": True, "silence": "noise_files",
           "test_set": "separate"},
    # emotion/config.yaml (test_fold fold1-5, valid_ratio 0.2, random_split after torch.manual_seed(0))
    "er": {"optimizer": "adam", "lr": 1e-4, "batch_size": 4, "accumulate": 8, "max_steps": 30_000,
           "val_interval": 1_000, "grad_clip": 1.0, "head.proj": 256, "folds": [1, 2, 3, 4, 5], "dev_split": "random",
           "dev_ratio": 0.2},
    # sv_voxceleb1/config.yaml -> configs/amsoftmax.yaml (TorchOptim AdamW: torch's weight decay 0.01)
    "asv": {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.01, "batch_size": 10, "accumulate": 5,
            "max_steps": 200_000, "val_interval": 10_000, "grad_clip": 1000.0, "min_train_seconds": 2.0,
            "crop_seconds": 8.0, "selection": "dev", "head.style": "superb", "head.channels": 512, "head.pooled": 1500,
            "head.embedding": 512, "head.margin": 0.4, "head.scale": 30.0},
    # asr/config.yaml, dataset.py (length-sorted buckets of train_batch_size, halved: HALF_BATCHSIZE_TIME)
    "asr": {"optimizer": "adam", "lr": 1e-4, "batch_size": 32, "batching": "s3prl_asr", "accumulate": 1,
            "max_steps": 200_000,
            "val_interval": 2_000, "grad_clip": 1.0, "head.proj": 1024, "head.hidden": 1024, "head.layers": 2,
            "head.dropout": 0.2, "head.specaug": True, "head.final_dropout": True},  # + specaug block, RNNs
    # ctc/libriphone.yaml (project_dim 256; corpus/libriphone.py: the G2P lexicon's phones)
    "pr": {"optimizer": "adam", "lr": 1e-2, "batch_size": 16, "batching": "s3prl_ctc", "accumulate": 2,
           "max_steps": 100_000,
           "val_interval": 1_000, "grad_clip": 1.0, "head.proj": 256, "lexicon": "librispeech"},
    # phone_linear/config.yaml (optimizer name AdamW: s3prl/optimizers.py's AdamW, weight decay 0, eps 1e-7),
    # dataset.py (train_split.txt / test_split.txt, train_dev_seed 1337) and expert.py (_match_length)
    "phone": {"optimizer": "adamw", "lr": 2e-4, "weight_decay": 0.0, "eps": 1e-7, "batch_size": 32, "accumulate": 1,
              "max_steps": 500_000, "val_interval": 10_000, "grad_clip": 1.0, "label_splits": "s3prl",
              "alignment": "s3prl"},
    # ctc/snips.yaml (corpus.bucketing: True), ctc/data.py
    "sf": {"optimizer": "adam", "lr": 1e-4, "batch_size": 32, "batching": "s3prl_ctc", "accumulate": 1,
           "max_steps": 200_000,
           "val_interval": 2_000, "grad_clip": 1.0, "head.proj": 1024, "head.hidden": 1024, "head.layers": 2,
           "head.dropout": 0.2, "head.final_dropout": True, "head.specaug": "adaptive"},
}


def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("task", sorted(S3PRL))
def test_superb_protocol_holds_s3prls_published_values(task):
    full = recipe(task, "superb").full
    for key, value in S3PRL[task].items():
        assert _get(full, key) == value, (task, key, _get(full, key), value)


def test_config_command_prints_the_resolved_recipe(capsys):
    assert main(["config", "--task", "asv", "--protocol", "superb"]) == 0
    out = capsys.readouterr().out
    assert "protocol superb" in out and "accumulate" in out and "(asv.superb.yaml)" in out
    assert "200,000 optimizer steps of 10 x 5 accumulated = 50 utterances" in out
    assert main(["config", "--task", "asv", "--protocol", "superb", "--set", "selection=test"]) == 0
    assert "selection          test" in capsys.readouterr().out
    assert main(["config", "--task", "word", "--protocol", "superb"]) == 2
    assert "no protocol 'superb'" in capsys.readouterr().err


def test_quick_is_every_tasks_yaml_unchanged_so_committed_identities_stay():
    for name in task_names():
        cls = load_task(name)
        assert resolve_recipe(cls, "quick").config == cls.default_config(), name
        # stating a neutral value is the same experiment as leaving it out
        same = resolve_recipe(cls, "quick", {"accumulate": 1, "optimizer": "adam", "selection": "dev",
                                             "batching": "random"}).config
        assert same == cls.default_config(), name
    changed = resolve_recipe(load_task("sid"), "quick", {"accumulate": 2}).config
    assert changed["accumulate"] == 2


def test_superb_is_the_default_where_the_task_has_it():
    assert choose_protocol(load_task("sid"), None) == "superb"
    assert choose_protocol(load_task("word"), None) == "quick"  # SUPERB has no word task
    with pytest.raises(HarnessError, match="no protocol 'fast'"):
        choose_protocol(load_task("sid"), "fast")
    with pytest.raises(HarnessError, match="unknown config key 'crop_seconds'"):
        resolve_recipe(load_task("ic"), "superb", {"crop_seconds": 2.0})  # a key ic does not take
    with pytest.raises(HarnessError, match="selection must be one of dev, test"):
        resolve_recipe(load_task("asv"), "superb", {"selection": "best"})


def test_every_shipped_benchmark_names_the_quick_protocol():
    for path in sorted((ROOT / "benchmarks").glob("*.yaml")):
        assert {job.protocol for job in load_config(path)} == {"quick"}, path


def test_the_budget_line_counts_the_utterances_of_a_bucketed_step():
    from harness.protocol import budget_line

    asr = recipe("asr", "superb").config
    assert budget_line(asr).startswith("200,000 optimizer steps of 16 utterances (s3prl's length-sorted buckets of 32")
    assert "16 x 2 accumulated = 32 utterances (s3prl's length-sorted buckets)" in budget_line(recipe("pr", "superb").config)
    assert "buckets" not in budget_line(recipe("asr", "quick").config)
