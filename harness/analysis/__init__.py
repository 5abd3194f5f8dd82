"""Layer-wise analyses: CCA of every layer with acoustic and linguistic properties; similarity
of layers, neurons and attention heads across models and checkpoints.

The contract is :mod:`harness.analysis.base` (an analysis, its options, its table); the
analyses the harness ships are declared in :mod:`harness.analysis.analyses` and computed in
:mod:`~harness.analysis.cca`, :mod:`~harness.analysis.cka`, :mod:`~harness.analysis.neurons`
and :mod:`~harness.analysis.attention` from what :mod:`harness.analysis.inputs` loads
(:mod:`~harness.analysis.frames`, :mod:`~harness.analysis.properties`); the measures are in
:mod:`harness.analysis.measures`. See docs/extending-analyses.md.
"""
