"""The analyses the harness ships, as registered in the ``harness.analyses`` entry-point group.

Each declares its name, help and options here and names its computation, a function
``(inputs, options) -> Table`` imported when the analysis runs: this module is imported
whenever the ``harness`` parser is built (see :mod:`harness.analysis.base`), and ``harness
run`` with a typo must not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

from harness.analysis.base import Analysis
from harness.analysis.options import (
    AttentionOptions,
    CcaOptions,
    CkaOptions,
    NeuronOptions,
    SvccaOptions,
)


class Computed(Analysis):
    """An analysis whose ``run`` is the function ``compute`` names (``"module:function"``),
    declared in one statement: ``class X(Computed, name=..., help=..., options=..., compute=...)``."""

    compute: ClassVar[str]

    def __init_subclass__(cls, **declared) -> None:
        super().__init_subclass__()
        for key, value in declared.items():
            setattr(cls, key, value)

    def run(self, inputs, options):
        module, _, function = self.compute.partition(":")
        return getattr(importlib.import_module(module), function)(inputs, options)


class Cca(Computed, name="cca", options=CcaOptions, compute="harness.analysis.cca:cca_table",
          help="projection-weighted CCA (published protocol) of every layer with a property"):
    """PWCCA of every layer with a property (:func:`harness.analysis.cca.cca_table`)."""


class Svcca(Cca, name="svcca", options=SvccaOptions,
            help="SVCCA (SVD to 99% of variance, then mean CCA) of every layer with a property"):
    """SVCCA of every layer with a property, scored like :class:`Cca`."""


class Cka(Computed, name="cka", options=CkaOptions, compute="harness.analysis.cka:cka_table",
          help="linear CKA (biased and debiased, or mini-batch) for every layer pair"):
    """Linear CKA of every layer pair, mini-batch CKA, or checkpoints against the last
    (:func:`harness.analysis.cka.cka_table`)."""


class Neurons(Computed, name="neurons", options=NeuronOptions, compute="harness.analysis.neurons:neurons_table",
              help="MaxCorr/MinCorr/LinReg for every layer pair, or neurons ranked for phone identity"):
    """Neuron-level similarity of layers, or neurons ranked for phone identity
    (:func:`harness.analysis.neurons.neurons_table`)."""


class Attention(Computed, name="attention", options=AttentionOptions,
                compute="harness.analysis.attention:attention_table",
                help="attention heads compared (JS, Pearson, Frobenius; best-match pairing) layer by layer"):
    """Attention heads of two models compared (:func:`harness.analysis.attention.attention_table`)."""
