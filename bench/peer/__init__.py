"""s3prl's side of the SUPERB side-by-side check (issue 22), used by ``bench/peer_s3prl.py``.

- ``patches``: what it takes to run s3prl 0.4.18's downstream experts here without editing
  site-packages (import stubs, a tensor re-implementation of the sox effects they call, CPU
  instead of ``.cuda()``, caches redirected out of the package folder).
- ``recipes``: each task's configuration dict, written from s3prl's published
  ``s3prl/downstream/<task>/config.yaml`` (the wheel ships no YAML), and the adapters that
  present the embedded corpus in the layout each expert expects.
- ``loop``: builds upstream, featurizer and expert as ``downstream/runner.py`` does and runs its
  training and evaluation loop (gradient accumulation, clipping, seeding before evaluation).
"""
