"""Options of the analyses the harness ships (their command-line arguments, declared once).

Light on purpose: imported when the ``harness`` parser is built (see
:mod:`harness.analysis.base`), so only the standard library and the contract.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass

from harness.analysis.base import AnalysisOptions, option
from harness.errors import HarnessError
from harness.registry import resolve_checkpoints

#: CCA properties (see :mod:`harness.analysis.properties`)
PROPERTIES = ("mel", "phone", "syllable", "word", "position", "speaker")
#: PWCCA weighting view: the one with fewer neurons (published), x (the layer) or y (the property)
WEIGHTINGS = ("smaller", "x", "y")


@dataclass(frozen=True, kw_only=True)
class CheckpointOptions(AnalysisOptions):
    """Options of analyses that also run over several checkpoints of one model."""

    checkpoints: tuple[str, ...] | None = option(
        None, nargs="+", convert=resolve_checkpoints,
        help="several checkpoints of one model (paths, globs or names): checkpoint x layer grid")

    def models(self) -> list[str]:
        return super().models() + list(self.checkpoints or [])


@dataclass(frozen=True, kw_only=True)
class CcaOptions(CheckpointOptions):
    """Every layer (of one model or of each checkpoint) against a property: the protocol of
    :class:`harness.analysis.cca.CcaProtocol` (folds, trials, regularisation) and the
    sampling of :class:`harness.analysis.properties.Sampling`."""

    prop: str = option(MISSING, "--property", choices=PROPERTIES, help="the property each layer is compared with")
    folds: int = option(10, type=int, help="label-stratified folds (default 10)")
    trials: int = option(3, type=int, help="trials, each with its own dev and test fold (3)")
    convention: str = option("reference", choices=["reference", "relative"],
                             help="regularisation: reference = epsilon x max|C| per view, flat dims dropped "
                                  "(published code; default); relative = epsilon x mean variance")
    epsilons: tuple[float, ...] | None = option(
        None, type=float, nargs="+",
        help="epsilon grid per view (default: 1e-11 1e-9 1e-7 1e-5 for reference, 0 1e-6 1e-4 1e-3 1e-2 1e-1 for "
             "relative)")
    top_words: int = option(500, type=int, help="most frequent words or syllables kept (default 500)")
    per_label: int = option(200, type=int, help="max samples per phone/word (default 200)")
    weights: str = option("smaller", choices=list(WEIGHTINGS),
                          help="PWCCA weights from the view with fewer neurons (published; default), the layer (x) "
                               "or the property (y)")
    measure: str = "pwcca"  # pwcca | svcca | cca_mean (not an argument: each is its own analysis)

    def __post_init__(self) -> None:
        if not (self.upstream or self.checkpoints):
            raise HarnessError("give --upstream or --checkpoints")
        super().__post_init__()


@dataclass(frozen=True, kw_only=True)
class SvccaOptions(CcaOptions):
    """CCA options for SVCCA: no projection weights."""

    weights: str = "smaller"
    measure: str = "svcca"


def _check_upstream(options: AnalysisOptions) -> None:
    if not options.upstream and not getattr(options, "checkpoints", None):
        raise HarnessError("give --upstream")


@dataclass(frozen=True, kw_only=True)
class PairOptions(AnalysisOptions):
    """Options of analyses comparing two models (or one with itself)."""

    against: str | None = option(None, help="a second upstream (default: the same model)")

    def __post_init__(self) -> None:
        _check_upstream(self)
        super().__post_init__()

    def models(self) -> list[str]:
        return super().models() + ([self.against] if self.against else [])


@dataclass(frozen=True, kw_only=True)
class CkaOptions(PairOptions, CheckpointOptions):
    """Linear CKA of every layer pair (biased and debiased) on at most ``max_samples`` frames
    paired by time; or mini-batch CKA over every frame (``minibatch`` > 0); or, with
    ``checkpoints``, each checkpoint's layer l against the last checkpoint's layer l."""

    minibatch: int = option(0, type=int, help="mini-batch CKA (Nguyen et al. 2021) over every frame in batches of "
                                              "this many frames, reading one utterance at a time (default: off)")
    pwcca: bool = option(False, help="also held-out PWCCA of every layer pair (fitted on a random half of the "
                                     "frames, scored on the other; epsilon 1e-9 x max|C| per view)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.checkpoints and (self.minibatch or self.pwcca):
            raise HarnessError("--checkpoints compares each checkpoint with the last by linear CKA; "
                               "--minibatch and --pwcca apply to --upstream")
        if self.minibatch and self.pwcca:
            raise HarnessError("--pwcca needs the frames in memory: use it without --minibatch")
        if self.minibatch and self.minibatch < 4:
            raise HarnessError("--minibatch needs at least 4 frames per batch")

    @property
    def mode(self) -> str:
        """``checkpoints`` (checkpoint x layer grid), ``minibatch`` (every frame) or ``frames``
        (a sample of frames held in memory, with held-out PWCCA if ``pwcca``)."""
        return "checkpoints" if self.checkpoints else "minibatch" if self.minibatch else "frames"


@dataclass(frozen=True, kw_only=True)
class NeuronOptions(PairOptions):
    """Neuron-level similarity of every layer pair, or (``prop="phone"``) each layer's
    neurons ranked for phone identity."""

    prop: str | None = option(None, "--property", choices=["phone"],
                              help="rank each layer's neurons for phone identity instead of comparing layers")


@dataclass(frozen=True, kw_only=True)
class AttentionOptions(PairOptions):
    """Attention heads of two models compared on the first ``limit`` utterances."""

    limit: int | None = option(20, type=int, help="use only the first N utterances (default 20)")
