"""Models trained here: self-supervised pretraining recipes and CTC fine-tuning.

- ``loop``: the one training loop (`fit`) and the `Objective` hooks every recipe implements;
- ``schedules``: learning-rate and momentum schedules;
- ``data``: training audio, step batches, crops and masks; ``runs``: a run's files
  (recipe, log, resume state, checkpoints, shipped copies);
- ``recipe``: the `Recipe` contract (entry-point group ``harness.recipes``) and
  `run_pretraining` (``harness pretrain``);
- recipes ``hubert``, ``wav2vec2``, ``dino``; ``finetune`` (``harness finetune``).
"""
