"""One typed config for the evaluation: which attacks against which targets with whose shadows, the seeds
of the attacks and of the bootstrap, how configurations are compared, where results go. It generates the
evaluation flags of train.py, of every mia/ script and of mia/compare.py (add_evaluation_args), as
configs/config.py's ExperimentConfig generates the training flags; each field is validated once, here
(validate), whatever script parsed it.

Seeds have distinct names: train.py's --seed is the training seed, --attack-seed seeds the attacks'
random choices, --bootstrap-seed the resamples of the comparisons (docs/attacks.md, "Seeds").
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from typing import Optional

from configs.config import _f, add_config_args
from utils.errors import UsageError


@dataclass
class EvaluationConfig:
    results_dir: str = _f("./results", "results root: tables, plots, report.md, mia/<suite>/ (scores and JSON)")
    attacks: Optional[list[str]] = _f(None, "attacks to run, any of: {attacks} (default: all; mia_advanced.py and "
                                            "mia_wemem.py: their suite)", metavar="ATTACK")
    targets: str = _f("0", "target model(s): an index, a comma-separated list (0,1,2) or 'all' (leave-one-out; "
                           "several: mean and std over targets)")
    shadows_from: Optional[str] = _f(None, "attack every configuration with the shadows of configuration CONFIG of "
                                           "the same study (a name, e.g. dense, or an experiment directory): the "
                                           "attacker who does not mirror the target's pipeline (mia_prune's "
                                           "'original'); results are named '<experiment>@CONFIG' (default: each "
                                           "configuration's own models, the adaptive attacker)", metavar="CONFIG")
    attack_seed: Optional[int] = _f(None, "seed of the attacks' random choices (shadow selection, attack models) "
                                          "(None: train.py's --seed; 0 in the mia/ scripts)")
    n_boot: int = _f(1000, "bootstrap resamples of the intervals and paired comparisons")
    bootstrap_seed: Optional[int] = _f(None, "seed of the bootstrap resamples, the same for every configuration: "
                                             "that pairs them (None: the attack seed)")
    level: float = _f(0.95, "confidence level of the intervals; 1 - level is the corrected significance level")
    min_class_count: int = _f(10, "members and non-members a class needs (every target) to be ranked in the "
                                  "per-class table")
    pairs: Optional[list[str]] = _f(None, "pairs of configuration names, difference A - B (default: each pruned - "
                                          "dense, the registry's pairs per sparsity, each method at each sparsity - "
                                          "the next lower)", metavar="A:B")

    def validate(self) -> "EvaluationConfig":
        """Every field checked, one line for the first problem (UsageError). The attack and target
        names are the registry's and mia/evaluate.py's target syntax; --shadows-from needs the study's
        configurations and is resolved by mia/evaluate.resolve_shadows_from."""
        from mia.attacks import check_attacks
        from mia.evaluate import target_indices

        check_attacks(self.attacks or [])
        target_indices(self.targets)
        if self.n_boot < 2 or not 0 < self.level < 1 or self.min_class_count < 1:
            raise UsageError(f"--n-boot must be >= 2, --level in (0, 1) and --min-class-count >= 1, got {self.n_boot}, "
                             f"{self.level} and {self.min_class_count}")
        bad = [p for p in self.pairs or [] if p.count(":") != 1 or not all(p.split(":"))]
        if bad:
            raise UsageError(f"--pairs takes A:B (two configuration names), got {bad[0]!r}")
        return self

    def attack_settings(self, device: str = "auto", training_seed: int = 0):
        """mia/attacks.py's AttackSettings on a resolved device ('auto': cuda when available); the attack
        seed defaults to training_seed (train.py's --seed; 0 elsewhere)."""
        from mia.attacks import AttackSettings
        from utils.device import resolve_device

        seed = training_seed if self.attack_seed is None else self.attack_seed
        return AttackSettings(seed=seed, device=str(resolve_device(device)))

    def compare_settings(self, attack_seed: int = 0):
        """How analysis/compare.py compares the configurations; the bootstrap seed defaults to the attack seed."""
        from artifacts.schema import Settings

        seed = attack_seed if self.bootstrap_seed is None else self.bootstrap_seed
        return Settings(self.n_boot, seed, self.level, self.min_class_count)


FIELDS = tuple(f.name for f in fields(EvaluationConfig))
ATTACK_FIELDS = ("attacks", "targets", "shadows_from", "attack_seed")  # what every attack script takes
COMPARE_FIELDS = ("n_boot", "bootstrap_seed", "level", "min_class_count", "pairs")  # what comparing takes


def add_evaluation_args(parser: argparse.ArgumentParser, names: tuple[str, ...] = FIELDS, **defaults) -> None:
    """The flags of the EvaluationConfig fields `names` (a script's defaults, e.g. a suite's attacks,
    override the dataclass's); the attack names fill the help's {attacks}."""
    from mia.attacks import ATTACKS

    add_config_args(parser, EvaluationConfig, skip=set(FIELDS) - set(names), defaults=defaults,
                    names={"attacks": " ".join(ATTACKS)})


def add_seed_alias(parser: argparse.ArgumentParser, means: str) -> None:
    """--seed where it meant another seed (the attack seed of a mia/ script, the bootstrap seed of
    mia/compare.py): still accepted, as `means`, with one line saying so (seed_alias)."""
    parser.add_argument("--seed", dest="deprecated_seed", type=int, default=None,
                        help=f"deprecated: the same as --{means.replace('_', '-')}")
    parser.set_defaults(seed_alias_means=means)


def evaluation_from_args(args: argparse.Namespace) -> EvaluationConfig:
    """The validated EvaluationConfig of parsed flags (fields a script has no flag for keep their
    defaults); a deprecated --seed is applied to the field it stands for, with one line on stderr."""
    cfg = EvaluationConfig(**{f: getattr(args, f) for f in FIELDS if hasattr(args, f)})
    if getattr(args, "deprecated_seed", None) is not None:
        means = args.seed_alias_means
        print(f"note: --seed is deprecated in this script; it is --{means.replace('_', '-')} "
              f"(train.py's --seed is the training seed)", file=sys.stderr)
        if getattr(cfg, means) is None:
            setattr(cfg, means, args.deprecated_seed)
    return cfg.validate()
