"""One typed config for every run. The CLI, JSON files and validation all derive from it.

Each field's `help` metadata is its comment and its --help text; defaults live only here. A help
text names the registries' entries through {placeholders} (registry_names()), filled when the parser
is built, so a new dataset, arch or pruning method shows in --help with no edit here. A field with `flags`
metadata is a mapping whose keys are flags of their own, generated from a registry (defense_params: each
defense's parameters, from its DefenseSpec), so a new defense's parameters need no field here either.
Defaults are the predecessor recipe (docs/protocol.md, "The recipe"): SGD lr 0.1, momentum 0.9,
wd 5e-4, batch 128, 200 epochs, LR x0.1 at 50% and 75% of training.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, get_args, get_origin, get_type_hints

from artifacts import paths
from utils.errors import UsageError


def _f(default, help: str, **kw):
    """A dataclass field with its one-line documentation (shown in --help)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ExperimentConfig:
    # --- identity and output -------------------------------------------------------------
    name: Optional[str] = _f(None, "experiment name (default: '<method>' or '<method>_<sparsity>')")
    runs_dir: str = _f("./runs", "root directory of all runs")
    # --- data ----------------------------------------------------------------------------
    dataset: str = _f("cifar10", "{datasets} ({embedded}: embedded, offline; {data_path}: --data-path; docs/datasets.md)")
    data_dir: str = _f("./datasets", "where datasets are stored / downloaded (file layouts: docs/datasets.md)")
    data_path: Optional[str] = _f(None, "npz file with x_train, y_train, x_test, y_test (for --dataset {data_path})")
    pool_size: Optional[int] = _f(None, "use only the first N training images as the membership pool (default: all)")
    test_size: Optional[int] = _f(None, "use only N images of the test split (a fixed random draw, seed 0) for "
                                        "validation and test accuracy (default: all); evaluating 10,000 images per "
                                        "model costs more than training a small model on a small pool")
    val_fraction: float = _f(0.2, "fraction of the test split held out for checkpoint selection (never the pool)")
    val_from: Optional[int] = _f(None, "first epoch (1-based) evaluated on the validation slice and eligible as the "
                                       "selected checkpoint (default: the training loop's first milestone, where the "
                                       "learning rate first decays; 1: every epoch; docs/protocol.md, 'Checkpoint selection')")
    val_every: int = _f(1, "epochs between validation passes from --val-from on; the last epoch is always validated")
    # --- model ---------------------------------------------------------------------------
    arch: str = _f("resnet", "{archs}")
    layers: Optional[int] = _f(None, "depth (default: {default_layers})")
    width_factor: Optional[int] = _f(None, "width multiplier, an integer: WideResNet k, MobileNetV2's multiplier, the MLP's "
                                           "hidden widths x k; ignored by resnet, vgg, densenet (default: {default_widths})")
    # --- optimisation --------------------------------------------------------------------
    epochs: int = _f(200, "training epochs")
    batch_size: int = _f(128, "mini-batch size (images)")
    lr: float = _f(0.1, "initial SGD learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(5e-4, "L2 weight decay")
    nesterov: bool = _f(False, "use Nesterov momentum")
    milestones: Optional[list[int]] = _f(None, "epochs at which LR is multiplied by --gamma (default: 50%% and 75%% of --epochs)")
    gamma: float = _f(0.1, "LR decay factor at each milestone")
    seed: int = _f(0, "training seed (model i uses a seed derived from (seed, i))")
    # --- execution -----------------------------------------------------------------------
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    workers: int = _f(0, "data-loading workers (the on-device pipeline needs none; used by the baseline benchmark)")
    amp: bool = _f(True, "autocast the training forward where the hardware computes it natively: bf16 on CUDA from "
                         "compute capability 8.0 and on CPUs with AMX or AVX512-BF16, fp16 on older GPUs, fp32 on "
                         "other CPUs (BatchNorm stays fp32; evaluation on a CPU and the signals stay fp32; docs/long_runs.md)")
    channels_last: bool = _f(True, "channels_last (NHWC) memory format for the model, on CPU and CUDA")
    compile: bool = _f(False, "torch.compile the model (pays off for long runs)")
    pack: Optional[int] = _f(None, "models of a configuration trained at once as one packed network (docs/packing.md); "
                                   "default: 1 on CPU, on CUDA as many as fit in half the free memory (at most 17); 1 = one by one")
    pack_mode: str = _f("auto", "how a pack computes: grouped (one packed network) | sequential (each model's forward and "
                                "backward in turn, one optimizer step) | auto: grouped on CUDA and for images of at most "
                                "16x16 pixels, sequential otherwise (docs/packing.md)")
    verbose: bool = _f(False, "print a line per training iteration")
    checkpoint_every: Optional[int] = _f(None, "epochs between a model's resumable states (a killed run rerun with "
                                               "--skip-existing continues from the last one; docs/long_runs.md); "
                                               "default: after the first epoch, then as soon as writing has taken at most "
                                               "5%% of the time since the last write; 0: never")
    # --- pruning (docs/pruning.md) ---------------------------------------------------------
    method: str = _f("dense", "{methods}: dense trains the unpruned model, every other method prunes to --sparsity "
                              "(docs/pruning.md); --prune --prune-method M is the same as --method M")
    sparsity: float = _f(0.0, "target fraction of prunable weights (every Conv2d, every Linear but the classifier) set to zero, in (0, 1)")
    prune_freq: int = _f(16, "mask refresh interval (iterations)")
    target_epoch: Optional[int] = _f(None, "{scheduled}: epoch at which the cubic schedule reaches --sparsity (default 0.375 x epochs); {one_shot}: none (pruned at init)")
    freeze_epoch: Optional[int] = _f(None, "{frozen} only: epoch from which the mask is fixed (default 0.9 x epochs)")
    prune_scope: str = _f("global", "{scoped}: magnitude ranking over every prunable weight at once (global) or each "
                                    "layer to the sparsity (layer: mia_prune's l1unstructure)")
    # --- a method's own settings (MethodSpec.options; METHOD_OPTIONS below has their defaults) -----------
    snip_batches: Optional[int] = _f(None, "snip: mini-batches of the model's own training subset whose summed "
                                           "gradient scores |w * g| at initialisation (default with snip: 1, the paper's)")
    synflow_rounds: Optional[int] = _f(None, "synflow: pruning rounds, the kept fraction (1 - s)^(r/n) after round r "
                                             "(default with synflow: 100, the paper's)")
    drop_fraction: Optional[float] = _f(None, "rigl, set: fraction alpha of each layer's active weights dropped and "
                                              "regrown at the first update, cosine-decayed to 0 at 75%% of training; "
                                              "updates every --prune-freq steps (the paper's 100) (default with rigl, set: 0.3)")
    density: Optional[str] = _f(None, "rigl, set: per-layer densities, erk (Erdos-Renyi-Kernel) | uniform; the first "
                                      "layer dense either way (default with rigl, set: erk)")
    prune_rounds: Optional[int] = _f(None, "imp, lth: pruning rounds R, round r pruning to 1 - (1 - s)^(r/R) and then "
                                           "training (imp: --finetune-epochs; lth: the dense recipe from --rewind-epoch "
                                           "on, a full training each) (default with imp: 5, WeMeM's; with lth: the "
                                           "fewest rounds pruning at most 20%% of the remaining weights each, open_lth's)")
    rewind_epoch: Optional[int] = _f(None, "lth: the survivors are rewound to dense model i's state at the end of this "
                                           "epoch (0: its initialisation), one of {rewind_epochs}, the states every "
                                           "dense run keeps (default with lth: 0)")
    # --- prune a trained model, then fine-tune ({from_dense}; docs/pruning.md) --------------------
    # Model i starts from dense model i of the same study (same recipe and keep row); these replace
    # --epochs / --lr / --milestones for its training loop. Defaults: mia_prune's fine-tuning budget.
    finetune_epochs: Optional[int] = _f(None, "fine-tuning epochs (default: epochs // 2, mia_prune's prune_epochs)")
    finetune_lr: Optional[float] = _f(None, "fine-tuning SGD learning rate (default: lr x gamma, the rate of the "
                                            "dense model's middle phase; 0.01 with the defaults)")
    finetune_milestones: Optional[list[int]] = _f(None, "fine-tuning epochs at which the LR is multiplied by --gamma "
                                                        "(default: 50%% and 75%% of --finetune-epochs)")
    train_source: bool = _f(True, "train the missing dense models a fine-tuned configuration starts from "
                                  "(--no-train-source: refuse, naming them)")
    # --- membership protocol and signals (docs/protocol.md) -------------------------------
    num_shadows: int = _f(0, "shadow models besides the target (model 0)")
    model_index: Optional[int] = _f(None, "train only model i (0 = target); default: all models")
    mia_seed: int = _f(0, "seed of the keep matrix (keep it fixed across configurations: paired comparisons)")
    mia_queries: Optional[int] = _f(None, "query augmentations per example for logits.npy (1..18: identity, flip, shifts; "
                                          "default 2; feature vectors have 1, the record itself)")
    sens_draws: int = _f(10, "SAMIA: Gaussian draws per example for sensitivity.npy")
    sens_eps: float = _f(1e-3, "SAMIA: perturbation scale eps")
    skip_existing: bool = _f(False, "skip models already complete; redo partial ones")
    # --- defense against membership inference (docs/defenses.md) ----------------------------
    defense: str = _f("none", "{defenses}: the training loss of the target and its shadows (the adaptive attacker; docs/defenses.md)")
    # Each defense's parameters (defenses/ DefenseSpec.params), by their keys `<defense>_<name>`: only those given
    # (no None), filled with their defaults by resolved(). Flat everywhere else: one flag each (--ppb-weight),
    # one config.json key each ("ppb_weight"), a keyword of the constructor and an attribute (cfg.ppb_weight).
    defense_params: dict[str, Any] = _f({}, "the parameters of --defense", flags=lambda: _defense_flags())

    def __post_init__(self):
        self.defense_params = {k: v for k, v in self.defense_params.items() if v is not None}

    def __getattr__(self, name: str):
        """A defense parameter by its key (cfg.ppb_weight): its value, None when not given."""
        if not name.startswith("_") and name != "defense_params" and name in _flat_keys(type(self)):
            return self.defense_params.get(name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    # ----------------------------------------------------------------------------------
    def resolved(self) -> "ExperimentConfig":
        """Fill the defaults that depend on other fields, validate, and return a new config."""
        from data.datasets import holds_feature_vectors
        from models import ARCHS  # imported here: models and pruning load torch, this module stays light
        from defenses import with_defaults
        from pruning import PRUNING_METHODS
        from pruning.iterative import ITERATIVE

        c = with_defaults(dataclasses.replace(self))
        if c.layers is None and c.arch in ARCHS:  # an unknown arch is named by validate()
            c.layers = ARCHS[c.arch].default_layers
        if c.width_factor is None and c.arch in ARCHS:
            c.width_factor = ARCHS[c.arch].default_width
        if c.mia_queries is None:  # tabular data has one query view (training/signals.py)
            c.mia_queries = 1 if holds_feature_vectors(c) else 2
        if c.milestones is None:
            c.milestones = [c.epochs // 2, (c.epochs * 3) // 4]
        spec = PRUNING_METHODS.get(c.method)  # an unknown method is named by validate()
        if spec is not None and spec.prunes:
            c.check_schedule_flags(spec)  # before the defaults fill them
            if c.target_epoch is None:
                c.target_epoch = int(round(0.375 * c.epochs)) if spec.uses_target else 0
            if c.freeze_epoch is None and spec.uses_freeze:
                c.freeze_epoch = int(round(0.9 * c.epochs))
            for f in spec.options:  # the method's own settings (refused for other methods by validate())
                if getattr(c, f) is None:
                    setattr(c, f, METHOD_OPTIONS[f])
            if spec.iterative and c.prune_rounds is None:  # lth's default depends on the sparsity
                c.prune_rounds = ITERATIVE[spec.iterative].default_rounds(c.sparsity)
            if spec.finetunes:  # fine-tuned from a trained model: its own, shorter schedule
                c.finetune_epochs = c.finetune_epochs if c.finetune_epochs is not None else max(1, c.epochs // 2)
                c.finetune_lr = c.finetune_lr if c.finetune_lr is not None else float(f"{c.lr * c.gamma:.12g}")
                if c.finetune_milestones is None:
                    c.finetune_milestones = [c.finetune_epochs // 2, (c.finetune_epochs * 3) // 4]
        else:
            c.sparsity = 0.0
        if c.name is None:
            c.name = paths.config_name(c.method, c.sparsity, c.defense)
        c.validate()
        return c

    def check_schedule_flags(self, spec) -> None:
        """--target-epoch and --freeze-epoch only where the method has them: a static run given a
        schedule would otherwise silently be a different experiment from the one asked for."""
        if not spec.uses_target and self.target_epoch not in (None, 0):  # 0 = at init: what static does
            raise UsageError(f"--target-epoch does not apply to --prune-method {self.method} (pruned once at "
                             f"initialisation); use --prune-method gmp for gradual magnitude pruning")
        if not spec.uses_freeze and self.freeze_epoch is not None:
            raise UsageError(f"--freeze-epoch applies to --prune-method {registry_names()['frozen']} only, "
                             f"not {self.method}")

    def check_finetune_flags(self, spec) -> None:
        """Scope and fine-tuning flags only where the method has them (one line naming the flag)."""
        from pruning.criteria import SCOPES

        if self.prune_scope not in SCOPES:
            raise UsageError(f"unknown --prune-scope '{self.prune_scope}'; valid: {', '.join(SCOPES)}")
        if self.prune_scope != "global" and not spec.scoped:
            raise UsageError(f"--prune-scope {self.prune_scope} applies to {registry_names()['scoped']} only, "
                             f"not {self.method}")
        given = [f for f in FINETUNE_FIELDS if getattr(self, f) is not None]
        if not spec.finetunes and given:
            raise UsageError(f"--{given[0].replace('_', '-')} applies to {registry_names()['from_dense']} only "
                             f"(they fine-tune a trained dense model), not {self.method}")
        if spec.finetunes:
            if self.finetune_epochs <= 0:
                raise UsageError(f"--finetune-epochs must be positive, got {self.finetune_epochs}")
            if not self.finetune_lr > 0:
                raise UsageError(f"--finetune-lr must be positive, got {self.finetune_lr}")

    def validated(self, epoch: int) -> bool:
        """Whether the training loop (self: the loop's config, fit_config()) evaluates the validation slice
        after epoch `epoch` (1-based), making it eligible as the selected checkpoint. Before the first LR decay
        the model is far from its best, so validating there costs time and never selects the checkpoint
        (docs/benchmarks.md, 'Checkpoint selection'); the last epoch is always validated."""
        start = self.val_from if self.val_from is not None else max(1, min(self.milestones or [1]))
        start = min(start, self.epochs)
        return epoch == self.epochs or (epoch >= start and (epoch - start) % self.val_every == 0)

    def check_method_options(self, spec) -> None:
        """A method's own settings (MethodSpec.options) only for it, each in its range: one line naming the flag."""
        from pruning.dynamic import DENSITIES, GROWERS
        from pruning.iterative import REWIND_EPOCHS
        from pruning.saliency import SCORERS

        for f in METHOD_OPTIONS:
            v, flag = getattr(self, f), "--" + f.replace("_", "-")
            if f not in spec.options:
                if v is not None:
                    raise UsageError(f"{flag} applies to --prune-method {_options_owners(f)} only, not {self.method}")
                continue
            if f in ("snip_batches", "synflow_rounds", "prune_rounds") and v < 1:
                raise UsageError(f"{flag} must be at least 1, got {v}")
            if f == "drop_fraction" and not 0 < v < 1:
                raise UsageError(f"{flag} must be in (0, 1), got {v}")
            if f == "density" and v not in DENSITIES:
                raise UsageError(f"unknown {flag} '{v}'; valid: {', '.join(DENSITIES)}")
            if f == "rewind_epoch" and v >= self.epochs:
                raise UsageError(f"{flag} {v} is past the dense run's {self.epochs} epochs (lth retrains its epochs "
                                 f"k..{self.epochs}, so k must be below {self.epochs})")
            if f == "rewind_epoch" and v not in REWIND_EPOCHS:
                raise UsageError(f"{flag} {v} is not a rewind point the dense run keeps: it keeps the ends of epochs "
                                 f"{', '.join(str(e) for e in REWIND_EPOCHS if e < self.epochs)} of its {self.epochs}")
        reads = (spec.scorer and SCORERS[spec.scorer].reads_data) or (spec.grow and GROWERS[spec.grow].reads_gradient) \
            or spec.step is not None  # a step rule may read the step's gradient (pruning/methods.py)
        if reads and self.defense == "dp":
            raise UsageError(f"--prune-method {self.method} ranks weights by gradients of the training data "
                             f"outside DP-SGD's clipping and noise: --defense dp's epsilon would not hold")

    def fit_config(self) -> "ExperimentConfig":
        """The config the training loop runs: for a method that fine-tunes a trained model, its epochs,
        learning rate and milestones are the fine-tuning ones (the rest of the recipe, the dense model's,
        is what the run records); an iterative method (imp, lth) runs --prune-rounds rounds of its recipe in one
        loop (pruning/iterative.round_schedule: imp's the fine-tuning one, lth's the dense one from --rewind-epoch)."""
        from pruning import PRUNING_METHODS
        from pruning.iterative import round_schedule

        spec = PRUNING_METHODS[self.method]
        if not (spec.finetunes or spec.iterative):
            return self
        epochs, lr, milestones = (self.finetune_epochs, self.finetune_lr, self.finetune_milestones) if spec.finetunes \
            else (self.epochs, self.lr, self.milestones)
        if not spec.iterative:
            return dataclasses.replace(self, epochs=epochs, lr=lr, milestones=list(milestones))
        offset, rounds = self.rewind_epoch or 0, self.prune_rounds
        total, lr, expanded = round_schedule(epochs, lr, milestones, self.gamma, offset, rounds)
        # validation only where a checkpoint can be selected, the last round: from where one round of the recipe
        # would start validating (--val-from counted from the rewind epoch; default: the round's first decay)
        length = total // rounds
        first = self.val_from - offset if self.val_from is not None else min([m for m in expanded if m < length] or [1])
        return dataclasses.replace(self, epochs=total, lr=lr, milestones=list(expanded),
                                   val_from=(rounds - 1) * length + min(max(1, first), length))

    def validate(self) -> None:
        from data.datasets import check_dataset, holds_feature_vectors
        from defenses import check_defense
        from models import check_arch
        from pruning import PRUNING_METHODS

        check_dataset(self)
        check_arch(self.arch, self.layers, self.width_factor)
        check_defense(self)
        for name in ("epochs", "batch_size", "prune_freq", "mia_queries", "sens_draws", "val_every"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("lr", "sens_eps"):
            if not getattr(self, name) > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.val_from is not None and not 1 <= self.val_from <= self.epochs:
            raise UsageError(f"--val-from must be in 1..{self.epochs} (an epoch of the run), got {self.val_from}")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.pool_size is not None and self.pool_size < 2:
            raise UsageError(f"--pool-size must be at least 2, got {self.pool_size}")
        if self.test_size is not None and self.test_size < 2:
            raise UsageError(f"--test-size must be at least 2 (a validation and a test image), got {self.test_size}")
        if self.mia_queries > 18:
            raise UsageError(f"--mia-queries must be at most 18, got {self.mia_queries}")
        if self.mia_queries > 1 and holds_feature_vectors(self):
            raise UsageError(f"--dataset {self.dataset} holds feature vectors: one query view (a record has no pixels "
                             f"to flip or shift), so --mia-queries must be 1, got {self.mia_queries}")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every must be >= 0 (0: never), got {self.checkpoint_every}")
        if self.pack is not None and self.pack < 1:
            raise UsageError(f"--pack must be at least 1, got {self.pack}")
        if self.pack_mode not in PACK_MODES:
            raise UsageError(f"unknown --pack-mode '{self.pack_mode}'; valid: {', '.join(PACK_MODES)}")
        if self.num_shadows < 0:
            raise UsageError(f"--num-shadows must be >= 0, got {self.num_shadows}")
        if self.model_index is not None and not 0 <= self.model_index <= self.num_shadows:
            raise UsageError(f"--model-index must be in 0..{self.num_shadows} (the target and {self.num_shadows} shadows), got {self.model_index}")
        spec = PRUNING_METHODS.get(self.method)
        if spec is None:
            raise UsageError(f"unknown --prune-method '{self.method}'; valid: {', '.join(PRUNING_METHODS)}")
        given = [f for f in METHOD_OPTIONS if getattr(self, f) is not None]
        if not spec.prunes and given:
            raise UsageError(f"--{given[0].replace('_', '-')} applies to --prune-method {_options_owners(given[0])} only")
        if not spec.prunes and (self.prune_scope != "global" or any(getattr(self, f) is not None for f in FINETUNE_FIELDS)):
            raise UsageError("--prune-scope and --finetune-* apply to pruned configurations (--prune --prune-method ...)")
        if spec.prunes:
            if not 0 < self.sparsity < 1:  # the one check of the range: the study and the pruner trust it
                raise UsageError(f"--sparsity must be in (0, 1), got {self.sparsity}")
            self.check_schedule_flags(spec)
            self.check_finetune_flags(spec)
            self.check_method_options(spec)
            if not 0 <= self.target_epoch < self.epochs:  # the last epoch must train at full sparsity
                raise UsageError(f"--target-epoch must be in 0..{self.epochs - 1} (before the last epoch), got {self.target_epoch}")
            if self.freeze_epoch is not None:
                if not self.target_epoch <= self.freeze_epoch <= self.epochs:
                    raise UsageError(f"--freeze-epoch must be in {self.target_epoch}..{self.epochs} (from --target-epoch to --epochs), got {self.freeze_epoch}")

    # ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        from pruning import method_revision

        d, flat = {}, _flags(type(self))
        for k, v in dataclasses.asdict(self).items():  # a mapping of flags flattened in place, every key present
            d.update({key: v.get(key) for key in flat[k]} if k in flat else {k: v})
        d["method_revision"] = method_revision(self.method)  # the method's meaning (pruning/methods.py)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """A config as recorded in a run directory (config.json, a checkpoint's config), in any format the
        run-directory reader converts (artifacts/rundir.current_config); keys no field holds are dropped."""
        from artifacts.rundir import current_config

        d = current_config(d)
        names = {f.name for f in fields(cls)} | set(_flat_keys(cls))
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ExperimentConfig":
        return cls.from_dict(json.loads(text))

    def recipe(self) -> dict[str, Any]:
        """Fields that define how every model of an experiment is trained: must match to mix models."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_RECIPE_FIELDS}


def recipe_diff(stored: dict, cfg: ExperimentConfig) -> list[str]:
    """What differs between a recorded recipe (a config.json's, a resumable state's) and cfg's, one item a
    field; first, when the method's meaning changed since (pruning/methods.py revisions), that change."""
    from artifacts.rundir import current_config
    from pruning.methods import former_meaning

    stored, new = current_config(stored), cfg.recipe()
    diff = [f"{k}: {stored.get(k)!r} there vs {new.get(k)!r} asked"
            for k in sorted(set(stored) | set(new)) if stored.get(k) != new.get(k)]
    former = former_meaning(cfg.method, stored.get("method_revision"))
    if former and stored.get("method_revision") != new.get("method_revision"):
        diff.insert(0, f"its models were trained when '{cfg.method}' meant {former}")
    return diff


# Fields that may differ between runs of the same experiment (where/how it runs, not what it trains).
NON_RECIPE_FIELDS = {"name", "runs_dir", "data_dir", "device", "workers", "verbose", "model_index",
                     "skip_existing", "compile", "pack", "pack_mode", "train_source", "checkpoint_every"}
PACK_MODES = ("auto", "grouped", "sequential")  # training/packing.py pack_mode()
# A method's own settings (pruning/methods.py MethodSpec.options) and their defaults, filled by resolved()
from configs.method_options import METHOD_OPTIONS  # noqa: E402 (defaults of the methods' own fields)


def _defense_flags() -> list[tuple[str, type, str]]:
    from defenses import param_flags  # the registry loads torch: read when a parser or a config needs it

    return param_flags()


def _flags(cls) -> dict[str, list[str]]:
    """The fields of cls that are mappings of flags (metadata "flags"), each with its keys in flag order."""
    return {f.name: [key for key, _, _ in f.metadata["flags"]()] for f in fields(cls) if "flags" in f.metadata}


def _flat_keys(cls) -> dict[str, str]:
    """Each key of a mapping of flags (ppb_weight) -> the field that holds it (defense_params)."""
    return {key: name for name, keys in _flags(cls).items() for key in keys}


def _accept_flat_keys(cls):
    """Let cls's constructor (and so dataclasses.replace and from_dict) take a mapping's keys as keywords,
    as its flags and config.json name them: ExperimentConfig(defense="ppb", ppb_weight=2.0); a key given so
    replaces the mapping's value (None: unset)."""
    init, names = cls.__init__, {f.name for f in fields(cls)}

    @functools.wraps(init)
    def __init__(self, *args, **kw):
        flat = {k: kw.pop(k) for k in [k for k in kw if k not in names]}
        owner = _flat_keys(cls) if flat else {}
        for k, v in flat.items():
            if k not in owner:
                raise TypeError(f"{cls.__name__}.__init__() got an unexpected keyword argument '{k}'")
            kw[owner[k]] = {**kw.get(owner[k], {}), k: v}
        init(self, *args, **kw)

    cls.__init__ = __init__
    return cls


_accept_flat_keys(ExperimentConfig)


def _options_owners(field_name: str) -> str:
    from pruning import PRUNING_METHODS

    return ", ".join(m for m, spec in PRUNING_METHODS.items() if field_name in spec.options)
FINETUNE_FIELDS = ("finetune_epochs", "finetune_lr", "finetune_milestones")


# ---------------------------------------------------------------------------------------------
# CLI derived from the dataclass: one flag per field, same name with dashes.

def _base_type(tp):
    """Optional[X] -> X; list[int] -> (list, int)."""
    if get_origin(tp) is not None and type(None) in get_args(tp):
        tp = next(a for a in get_args(tp) if a is not type(None))
    if get_origin(tp) is list:
        return list, get_args(tp)[0]
    return tp, None


def registry_names() -> dict[str, str]:
    """The registries' entries, for the {placeholders} of the help texts and messages. Read at call
    time (not import time): the registries load torch, and a test's toy entry must show too."""
    from data import DATASETS
    from defenses import DEFENSES
    from models import ARCHS
    from pruning import PRUNING_METHODS
    from pruning.iterative import REWIND_EPOCHS

    def methods(has) -> str:
        return ", ".join(m for m, spec in PRUNING_METHODS.items() if has(spec))  # each switch is False for dense

    return {"datasets": " | ".join(DATASETS), "embedded": ", ".join(d for d, s in DATASETS.items() if s.embedded),
            "data_path": ", ".join(d for d, s in DATASETS.items() if s.data_path), "archs": " | ".join(ARCHS),
            "default_layers": ", ".join(f"{a} {spec.default_layers}" for a, spec in ARCHS.items()),
            "default_widths": ", ".join(f"{a} {spec.default_width}" for a, spec in ARCHS.items()),
            "methods": " | ".join(PRUNING_METHODS),
            "pruning_methods": " | ".join(m for m, spec in PRUNING_METHODS.items() if spec.prunes),
            "scheduled": methods(lambda s: s.uses_target),
            "one_shot": methods(lambda s: s.one_shot), "frozen": methods(lambda s: s.uses_freeze),
            "scoped": methods(lambda s: s.scoped), "from_dense": methods(lambda s: s.finetunes),
            "rewind_epochs": ", ".join(map(str, REWIND_EPOCHS)),
            "defenses": " | ".join(DEFENSES)}


def add_config_args(parser: argparse.ArgumentParser, cls=ExperimentConfig, skip: set[str] = frozenset(),
                    defaults: dict[str, Any] | None = None, names: dict[str, str] | None = None) -> None:
    """One flag per field of the dataclass `cls` (--field-name), its help the field's `help` metadata with
    the registries' {placeholders} filled (registry_names(), plus `names`); `defaults` replaces a field's
    default for this parser (a script's own default, e.g. a suite's attacks)."""
    hints = get_type_hints(cls)
    names = {**registry_names(), **(names or {})}
    for f in fields(cls):
        if f.name in skip:
            continue
        if "flags" in f.metadata:  # a mapping: one flag per key, each unset (None) unless given
            for key, tp, text in f.metadata["flags"]():
                parser.add_argument("--" + key.replace("_", "-"), type=tp, default=None, help=f"{text} (default: None)")
            continue
        flag = "--" + f.name.replace("_", "-")
        tp, elem = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = (defaults or {}).get(f.name, default)
        help_ = f"{f.metadata.get('help', '').format_map(names)} (default: {default})"
        kw = {"metavar": f.metadata["metavar"]} if "metavar" in f.metadata else {}
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif tp is list:
            parser.add_argument(flag, type=elem, nargs="+", default=default, help=help_, **kw)
        else:
            parser.add_argument(flag, type=tp, default=default, help=help_, **kw)
        if cls is ExperimentConfig and f.name == "method":  # the two-flag spelling users know (config_from_args)
            parser.add_argument("--prune", action=argparse.BooleanOptionalAction, default=None,
                                help="with --prune-method M: the same as --method M")
            parser.add_argument("--prune-method", default=None, metavar="M",
                                help=f"with --prune: the same as --method M, one of {names['pruning_methods']}")


def config_from_args(args: argparse.Namespace, cls=ExperimentConfig) -> ExperimentConfig:
    names = [f.name for f in fields(cls)] + list(_flat_keys(cls))
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    prune, prune_method = getattr(args, "prune", None), getattr(args, "prune_method", None)
    if prune or prune_method is not None:  # --prune --prune-method M spells --method M
        if not prune or prune_method is None:
            raise UsageError("--prune and --prune-method go together (e.g. --prune --prune-method dpf --sparsity 0.9)")
        if values["method"] not in ("dense", prune_method):
            raise UsageError(f"--method {values['method']} and --prune-method {prune_method} disagree; give one")
        values["method"] = prune_method
    return cls(**values)


def load_config(path: str | Path) -> ExperimentConfig:
    from utils.io import load_json

    return ExperimentConfig.from_dict(load_json(path))


# Fields resolved() derives from others: a command repeats them only where they differ from what it would derive.
DERIVED_FIELDS = ("name", "layers", "width_factor", "mia_queries", "milestones", "target_epoch", "freeze_epoch",
                  "finetune_epochs", "finetune_lr", "finetune_milestones", *METHOD_OPTIONS)
# Fields of one invocation, not of the configuration.
_NOT_IN_COMMAND = ("model_index", "skip_existing", "verbose", "train_source")


def command_line(cfg: ExperimentConfig, script: str = "run_experiment.py") -> str:
    """The command that trains this configuration again (its recorded config.json suffices): every
    field that differs from its default, derived fields only where they differ from their derivation."""
    import shlex

    flat = _flat_keys(type(cfg))
    derived_fields = (*DERIVED_FIELDS, *flat)  # a defense's parameters at their defaults are derived too
    derived = dataclasses.replace(cfg, **{k: None for k in derived_fields}).resolved()
    out = [f"python {script}"]
    defaults = {}
    for f in fields(cfg):  # every flag's default, a mapping's keys in its place (None: unset)
        defaults.update(dict.fromkeys(_flags(type(cfg))[f.name]) if f.name in flat.values() else
                        {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()})
    for name, default in defaults.items():
        v = getattr(cfg, name)
        if name in _NOT_IN_COMMAND or v == default or (name in derived_fields and v == getattr(derived, name)):
            continue
        flag = "--" + name.replace("_", "-")
        if name == "method":  # the spelling users know (--method is the same)
            out.append(f"--prune --prune-method {shlex.quote(v)}")
        elif isinstance(v, bool):
            out.append(flag if v else "--no-" + name.replace("_", "-"))
        elif isinstance(v, list):
            out.append(" ".join([flag, *(shlex.quote(str(x)) for x in v)]))
        else:
            out.append(f"{flag} {shlex.quote(str(v))}")
    return " ".join(out)
