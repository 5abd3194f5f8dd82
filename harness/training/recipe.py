"""The pretraining-recipe contract and ``harness pretrain`` as one library call.

A recipe is a `Recipe` subclass registered in the ``harness.recipes`` entry-point group
(built in: ``hubert``, ``wav2vec2``, ``dino`` in setup.cfg), so another package adds one
with one file and one entry point; ``harness pretrain --recipe NAME`` finds it through
`harness.registry.load_recipe`. A recipe says:

- ``name`` and its default recipe (`Recipe.default_recipe`, a dict; the built-in ones are
  YAML files beside their module);
- ``backend``: the upstream backend its checkpoints load with (``hf:DIR``, ``speechbrain:DIR``);
- how ``--set KEY=VALUE`` overrides apply (`Recipe.apply_overrides`; HuBERT's per-iteration
  rules live in its recipe);
- whether ``--reuse RUN`` works (``supports_reuse``) and what it resolves to
  (`Recipe.reuse_run`: a folder, or ``@NAME`` for a run shipped with the harness under
  ``harness.upstreams/checkpoints/NAME``);
- `Recipe.pretrain`: run or resume the recipe into a folder, returning each stage's final
  model folder. Most recipes are one stage trained by `harness.training.loop.fit`: they
  subclass `SingleStageRecipe` and name their `Objective` (see ``wav2vec2.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import torch

from harness.config import merge_config, parse_overrides
from harness.corpus.layout import embedded_corpus_dir
from harness.errors import HarnessError
from harness.registry import load_recipe
from harness.training.data import Audio, load_train_audio
from harness.training.loop import Objective, fit
from harness.training.runs import merge_recipe_file, packaged_recipe, prepare_run, ship


class Recipe:
    """A pretraining recipe (see the module docstring). Subclass it, set the class
    attributes, implement `default_recipe` and `pretrain`; register the class in the
    ``harness.recipes`` entry-point group."""

    #: the name ``--recipe`` takes (the entry point's name)
    name: str = ""
    #: the upstream backend the checkpoints load with: the CLI prints ``BACKEND:FOLDER``
    backend: str = "hf"
    #: whether ``--reuse`` can start a run from another run's finished stages
    supports_reuse: bool = False

    def default_recipe(self) -> dict:
        """The recipe used when no ``--config``/``--set`` changes it (a fresh dict each call)."""
        raise NotImplementedError

    def apply_overrides(self, recipe: dict, overrides: dict) -> dict:
        """``recipe`` with the parsed ``--set`` overrides (nested dict) merged in; unknown
        keys are refused with a HarnessError (`harness.config.merge_config`)."""
        return merge_config(recipe, overrides)

    def reuse_run(self, reuse: str, out: Path) -> Path:
        """The run folder ``--reuse`` names: a path, or ``@NAME`` for the run shipped with the
        harness as ``harness.upstreams/checkpoints/NAME``. Raises HarnessError when the recipe
        cannot reuse, no such run ships, or it is ``out`` itself."""
        if not self.supports_reuse:
            raise reuse_refused(self.name)
        if reuse.startswith("@"):  # a run shipped with the harness, e.g. @tiny_hubert
            source = Path(str(resources.files("harness.upstreams").joinpath("checkpoints", reuse[1:])))
            if not (source / "recipe.yaml").exists():
                raise HarnessError(f"--reuse {reuse}: no pretraining run of that name ships with the harness")
        else:
            source = Path(reuse)
        if source.resolve() == Path(out).resolve():
            raise HarnessError("--reuse needs another run than --out (it copies from it)")
        return source

    def pretrain(self, corpus: Path, out: Path, recipe: dict, progress: bool = True,
                 reuse: Path | None = None) -> list[Path]:
        """Run (or resume) ``recipe`` on the training audio of ``corpus`` into ``out``; return
        each stage's final model folder (``out/itN/final``). ``reuse``: a run folder from
        `reuse_run` (only when ``supports_reuse``)."""
        raise NotImplementedError


def reuse_refused(name: str) -> HarnessError:
    """The error for ``--reuse`` with a recipe that has a single stage."""
    return HarnessError(f"--reuse applies to the iterative HuBERT recipe; the {name} recipe has one stage")


def pretrain_single_stage(name: str, objective: Callable[[Audio, dict], Objective], corpus: Path, out: Path,
                          recipe: dict, progress: bool = True, reuse: Path | None = None) -> list[Path]:
    """Run (or resume) a one-stage recipe: claim ``out`` (`harness.training.runs.prepare_run`),
    read the training audio of ``recipe["data"]["layouts"]``, train ``objective(audio, recipe)``
    into ``out/it1`` with deterministic torch kernels (the backward pass of gathers accumulates
    with threads otherwise, and a resumed run would drift from an uninterrupted one).
    Returns ``[out/it1/final]``. Raises HarnessError when ``reuse`` is given."""
    if reuse is not None:
        raise reuse_refused(name)
    out = Path(out)
    prepare_run(out, recipe)
    audio = load_train_audio(corpus, recipe["data"]["layouts"], progress)
    final = out / "it1" / "final"
    if (final / "pretrain.json").exists():
        return [final]
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return [fit(objective(audio, recipe), out / "it1", out / "log.jsonl", progress)]
    finally:
        torch.use_deterministic_algorithms(previous)


class SingleStageRecipe(Recipe):
    """A recipe trained as one stage (``OUT/it1``) by the shared loop: a subclass sets
    ``objective`` (called with the training audio and the recipe, it gives the `Objective`)
    and ``defaults`` (package and name of its YAML recipe) or overrides `default_recipe`;
    ``--reuse`` is refused."""

    objective: Callable[[Audio, dict], Objective]
    defaults: tuple[str, str] = ("", "")

    def default_recipe(self) -> dict:
        return packaged_recipe(*self.defaults)

    def pretrain(self, corpus: Path, out: Path, recipe: dict, progress: bool = True,
                 reuse: Path | None = None) -> list[Path]:
        """Run (or resume) the recipe into ``out``; return ``[out/it1/final]``. Raises
        HarnessError for ``reuse`` (one stage) or a folder holding another run."""
        return pretrain_single_stage(self.name, self.objective, corpus, out, recipe, progress, reuse)


def get_recipe(name: str) -> Recipe:
    """The registered recipe ``name`` (an instance). Raises HarnessError for an unknown name
    or an entry point that is not a `Recipe`."""
    loaded = load_recipe(name)
    recipe = loaded() if isinstance(loaded, type) else loaded
    if not isinstance(recipe, Recipe):
        raise HarnessError(f"pretraining recipe {name!r} ({loaded!r}) is not a harness.training.recipe.Recipe")
    return recipe


@dataclass
class PretrainingResult:
    """What `run_pretraining` made."""

    out: Path
    backend: str
    finals: list[Path]  # each stage's final model folder
    shipped: list[Path] | None = None  # checkpoints copied by --ship
    ship_to: Path | None = None

    def format(self) -> str:
        """The lines ``harness pretrain`` prints: each stage as an upstream spec, where the
        checkpoints and the log are, what was shipped."""
        lines = [f"iteration {n}: {self.backend}:{final}" for n, final in enumerate(self.finals, 1)]
        lines.append(f"checkpoints: {self.out}/it*/step_*  (log: {self.out / 'log.jsonl'})")
        if self.shipped is not None:
            lines.append(f"shipped {len(self.shipped)} float16 checkpoints to {self.ship_to}")
        return "\n".join(lines)


def run_pretraining(name: str, out: Path, corpus: Path | None = None, config: Path | None = None,
                    overrides: Sequence[str] = (), seed: int | None = None, reuse: str | None = None,
                    ship_to: Path | None = None, ship_every: Sequence[int] | None = None,
                    ship_steps: Sequence[int] | None = None, progress: bool = True) -> PretrainingResult:
    """``harness pretrain``: the recipe ``name``'s default, with the YAML ``config`` and the
    ``--set`` ``overrides`` (``KEY=VALUE`` strings) merged in and ``seed`` set, trained (or
    resumed) on ``corpus`` (default: the embedded corpus) into ``out``; then, with
    ``ship_to``, the checkpoints copied there as float16 (`harness.training.runs.ship`:
    ``ship_every`` one interval, or one per iteration; or exactly ``ship_steps``).

    Raises HarnessError (one line) for an unknown recipe, bad recipe file or override, a
    folder that is not a corpus, a ``reuse`` the recipe refuses, and whatever training refuses."""
    impl = get_recipe(name)
    recipe = merge_recipe_file(impl.default_recipe(), config)
    recipe = impl.apply_overrides(recipe, parse_overrides(list(overrides)))
    if seed is not None:
        recipe["seed"] = seed
    corpus = Path(corpus) if corpus else embedded_corpus_dir()
    if not (corpus / "corpus.json").exists() and not (corpus / "LibriSpeech").is_dir():
        raise HarnessError(f"{corpus} is not a corpus root (no corpus.json or LibriSpeech/); "
                           "run `harness corpus build`")
    out = Path(out)
    source = impl.reuse_run(reuse, out) if reuse else None
    finals = impl.pretrain(corpus, out, recipe, progress=progress, reuse=source)
    result = PretrainingResult(out, impl.backend, finals)
    if ship_to is not None:
        every = ship_every[0] if ship_every and len(ship_every) == 1 else list(ship_every or []) or None
        result.shipped = ship(out, Path(ship_to), every, steps=ship_steps)
        result.ship_to = Path(ship_to)
    return result
