"""A study = every (method, sparsity, defense) configuration x every model index, then the evaluation.

plan_study() expands the study flags into resolved ExperimentConfigs; each (config, model index)
is one task (training/experiment.py); an executor from EXECUTORS (local loop here, Ray in
training/ray_executor.py) groups each configuration's tasks into packs (--pack) and runs each pack with
the same training function, experiment.run_pack_task().
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from configs.config import FINETUNE_FIELDS, METHOD_OPTIONS, ExperimentConfig
from defenses import DEFENSES, NONE, params
from pruning import PRUNING_METHODS
from training.experiment import Task, check_recipe, experiment_dir, plan_packs, run_pack_task
from training.progress import Progress
from training.ray_executor import run_ray
from training.sources import source_config
from utils.errors import DivergenceError, UsageError


# Functions, not constants: the registry is read when asked, so an entry added to it (or a test's toy
# entry) is a method of train.py with no edit here.
def all_methods() -> tuple[str, ...]:
    """Every method train.py --methods accepts: each entry of the method registry, dense included."""
    return tuple(PRUNING_METHODS)


def default_methods() -> tuple[str, ...]:
    """The study's comparison: every method not marked `extra` (gmp is one), dense first as in the registry."""
    return tuple(m for m, spec in PRUNING_METHODS.items() if not spec.extra)


def plan_study(base: ExperimentConfig, methods: list[str], sparsities: list[float],
               defenses: list[str] = (NONE,)) -> list[ExperimentConfig]:
    """One resolved config per configuration: dense once, each pruning method at each sparsity, each
    of them with every defense (a defense's parameters reach only its own configurations). Each sparsity
    is validated by the configurations' own validation (ExperimentConfig.validate)."""
    valid = all_methods()
    bad = [m for m in methods if m not in valid]
    if bad:
        raise UsageError(f"unknown method {bad[0]!r}; valid: {', '.join(valid)}")
    configs = []
    finetune_unset = {f: None for f in FINETUNE_FIELDS}
    for m in dict.fromkeys(methods):  # de-duplicated, in the order given
        # the study-wide schedule, scope and fine-tuning flags reach only the methods that have them
        spec = PRUNING_METHODS[m]
        sched = dict(target_epoch=base.target_epoch if spec.uses_target else None,
                     freeze_epoch=base.freeze_epoch if spec.uses_freeze else None,
                     prune_scope=base.prune_scope if spec.scoped else "global",
                     **({} if spec.finetunes else finetune_unset),
                     **{f: None for f in METHOD_OPTIONS if f not in spec.options})
        configs += [dataclasses.replace(base, method=m, sparsity=s, name=None, **sched)
                    for s in (dict.fromkeys(sparsities) if spec.prunes else [0.0])]  # dense: trained once
    configs = with_sources([c.resolved() for c in with_defenses(configs, defenses)])
    check_distinct(configs)
    return configs


def with_sources(configs: list[ExperimentConfig]) -> list[ExperimentConfig]:
    """The study as a dependency graph (training/sources.py): every configuration a fine-tuned one starts
    from is in the study (added when not asked for: `--methods finetune` trains dense first), and comes
    before every configuration that starts from it, so the local loop trains dense model i before model i is
    fine-tuned; the Ray executor orders its tasks by the same graph."""
    have = {experiment_dir(c) for c in configs}
    for c in list(configs):
        src = source_config(c)
        if src is not None and experiment_dir(src) not in have:
            have.add(experiment_dir(src))
            configs.append(src)
    return sorted(configs, key=lambda c: source_config(c) is not None)  # stable: the order given otherwise


def with_defenses(configs: list[ExperimentConfig], defenses: list[str]) -> list[ExperimentConfig]:
    """Each configuration once per defense, in the order given; a defense parameter of the study (e.g.
    --ppb-weight 2) reaches the configurations of its defense and is refused when that defense is not studied;
    the study's --pack does not reach a defense that trains one model at a time (dp)."""
    bad = [d for d in defenses if d not in DEFENSES]
    if bad:
        raise UsageError(f"unknown defense {bad[0]!r}; valid: {', '.join(DEFENSES)}")
    owner = {key: name for key, (name, _) in params().items()}
    for key in owner:
        if configs and key in configs[0].defense_params and owner[key] not in defenses:
            raise UsageError(f"--{key.replace('_', '-')} applies to defense {owner[key]}, which is not in --defenses {' '.join(defenses)}")
    one_by_one = {d: {"pack": None} if DEFENSES[d].per_example else {} for d in defenses}
    return [dataclasses.replace(c, defense=d, **one_by_one[d],  # an unknown key stays, for check_defense to name
                                defense_params={k: v for k, v in c.defense_params.items() if owner.get(k, d) == d})
            for c in configs for d in dict.fromkeys(defenses)]


def check_distinct(configs: list[ExperimentConfig]) -> None:
    """Two configurations of one study must not share a name or a directory: one's results would
    overwrite the other's. Refused before anything is trained."""
    for key, what in ((lambda c: c.name, "name"), (experiment_dir, "directory")):
        seen = {}
        for c in configs:
            other = seen.setdefault(key(c), c)
            if other is not c:
                raise UsageError(f"configurations {other.method} {other.sparsity!r} and {c.method} {c.sparsity!r} "
                                 f"would share the {what} {key(c)}; drop one")


def check_recipes(configs: list[ExperimentConfig]) -> None:
    """Refuse up front (before training anything) if a runs directory holds another recipe."""
    for c in configs:
        check_recipe(c)


def run_local(tasks: list[Task], options) -> list[str]:
    """Train the tasks' packs one after another in this process (one line per finished model).
    Returns failures: the models that diverged (DivergenceError: the study goes on without them); any
    other error propagates."""
    progress, failures = Progress(len(tasks)), []
    for pack in plan_packs(tasks):
        try:
            done = run_pack_task(pack)
        except DivergenceError as e:
            failures.append(str(e))
            done = e.finished
        progress.finished([(pack.model_label(s["model_index"]), s) for s in done])
    return failures


# Registry: executor name -> function(tasks, options) -> list of failure descriptions
EXECUTORS: dict[str, Callable] = {"local": run_local, "ray": run_ray}
