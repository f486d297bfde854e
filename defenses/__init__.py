"""Registry of defenses against membership inference (docs/defenses.md: formulas, papers, code).

A defense is a training loss (defenses/base.py) that composes with every pruning method: the pruner's
masks and hooks are untouched, only the loss whose gradient they mask changes. One that changes more says
so with the spec's hooks (dp: a GroupNorm model, the DP-SGD step, epsilon in the summary). Its parameters
(Param: name, default, rule, help, type) generate their flags `--<defense>-<name>` and their config.json keys
`<defense>_<name>` (ExperimentConfig.defense_params holds the values given); they stay None unless that defense
is asked for, resolved() fills their defaults from here and validate() checks them here, so a new defense is
one file and one entry. The shadows of a defended configuration train with the same defense (the adaptive
attacker).
"""
from __future__ import annotations

import functools

from defenses import dp
from defenses.base import DefenseSpec, Param, param, undefended
from defenses.label_smoothing import label_smoothing_loss
from defenses.ppb import ppb_loss
from defenses.relaxloss import relaxloss_loss
from utils.errors import UsageError

NONE = "none"

DEFENSES: dict[str, DefenseSpec] = {
    NONE: DefenseSpec(undefended, "no defense: mean cross-entropy"),
    "ppb": DefenseSpec(ppb_loss, "pair-based posterior balancing: CE + lambda * KL between the sorted posteriors "
                                 "of the batch's two halves",
                       "Yuan & Zhang, USENIX Security 2022; Machine-Learning-Security-Lab/mia_prune",
                       (Param("weight", 4.0, lambda v: v >= 0, ">= 0", "weight lambda of the KL term between the "
                              "sorted posteriors of the batch's two halves"),)),
    "relaxloss": DefenseSpec(relaxloss_loss, "RelaxLoss: the loss held near alpha (ascent below it, posterior "
                                             "flattening of correctly classified examples)",
                             "Chen, Yu & Fritz, ICLR 2022; DingfanChen/RelaxLoss",
                             (Param("alpha", 1.0, lambda v: v > 0, "> 0", "target loss level alpha",
                                    default_help="the authors' CIFAR-10 ResNet-20 value"),
                              Param("upper", 1.0, lambda v: 0 < v <= 1, "in (0, 1]",
                                    "cap on the true-class probability of the flattened soft labels"))),
    "label_smoothing": DefenseSpec(label_smoothing_loss, "cross-entropy against labels smoothed towards uniform",
                                   "Szegedy et al., CVPR 2016 (a RelaxLoss baseline)",
                                   (Param("eps", 0.1, lambda v: 0 <= v < 1, "in [0, 1)",
                                          "weight of the uniform distribution in the labels"),)),
    "dp": DefenseSpec(undefended, "DP-SGD: per-example clipping and Gaussian noise, epsilon from the RDP accountant; "
                                  "BatchNorm replaced by GroupNorm", "Abadi et al., CCS 2016; pytorch/opacus",
                      (Param("noise", 1.0, lambda v: v >= 0, ">= 0", "noise multiplier sigma (Gaussian noise of std "
                             "sigma x --dp-clip on the summed clipped gradients)", to_loss=False),
                       Param("clip", 1.0, lambda v: v > 0, "> 0", "per-example gradient norm bound C", to_loss=False),
                       Param("delta", None, lambda v: 0 < v < 1, "in (0, 1)", "delta of the reported epsilon",
                             default_help="1 / training-set size rounded down to a power of 10", to_loss=False)),
                      check=dp.check, model=dp.private_model, loop=dp.make_private,
                      summary=dp.record, per_example=True),
}


def params() -> dict[str, tuple[str, Param]]:
    """Every defense parameter by its config key `<defense>_<name>` (ppb_weight), with its defense, in
    registry order: the order of its flags and of its keys in config.json."""
    return {f"{defense}_{p.name}": (defense, p) for defense, spec in DEFENSES.items() for p in spec.params}


def param_fields() -> list[str]:
    """Every defense parameter's config key, in registry order."""
    return list(params())


def param_flags() -> list[tuple[str, type, str]]:
    """(config key, value type, help text) of each defense parameter's flag, for configs/config.py's parser."""
    out = []
    for key, (defense, p) in params().items():
        default = ", ".join(str(x) for x in (p.default, p.default_help) if x not in (None, ""))
        out.append((key, p.type, f"{defense}: {p.help}, {p.rule} (default with --defense {defense}: {default})"))
    return out


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def with_defaults(cfg):
    """cfg with its own defense's unset parameters at their defaults (the others stay None)."""
    import dataclasses

    spec = DEFENSES.get(cfg.defense)
    if spec is None:  # named by check_defense()
        return cfg
    fixed = {"pack": cfg.pack or 1, "amp": False, "channels_last": False} if spec.per_example else {}
    own = {f"{cfg.defense}_{p.name}": p.default for p in spec.params}
    return dataclasses.replace(cfg, defense_params={**own, **cfg.defense_params}, **fixed)


def check_defense(cfg) -> None:
    """A known defense, its parameters in range, no parameter of another defense (it would be silently ignored)."""
    if cfg.defense not in DEFENSES:
        raise UsageError(f"unknown --defense '{cfg.defense}'; valid: {', '.join(DEFENSES)}")
    known = params()
    unknown = [key for key in cfg.defense_params if key not in known]
    if unknown:
        raise UsageError(f"unknown defense parameter '{unknown[0]}'; valid: {', '.join(known)}")
    for key, (name, p) in known.items():
        v = cfg.defense_params.get(key)  # None: not given (ExperimentConfig keeps no None values)
        if v is None:
            continue
        if name != cfg.defense:
            raise UsageError(f"{_flag(key)} applies to --defense {name} only, not --defense {cfg.defense}")
        if not p.valid(v):
            raise UsageError(f"{_flag(key)} must be {p.rule}, got {v}")
    spec = DEFENSES[cfg.defense]
    if spec.per_example and cfg.pack not in (None, 1):
        raise UsageError(f"--defense {cfg.defense} trains one model at a time: --pack must be 1, got {cfg.pack}")
    if spec.check:
        spec.check(cfg)


def build_loss(cfg):
    """The training loss of cfg's defense: (logits [B, K, C], labels [B, K], epoch) -> loss per model [K]."""
    cfg = with_defaults(cfg)
    spec = DEFENSES[cfg.defense]
    return functools.partial(spec.loss, **{p.name: param(cfg, p.name) for p in spec.params if p.to_loss})



def defended_model(cfg, model):
    """The model cfg's defense trains (and load_model rebuilds): the model itself, or dp's GroupNorm version.
    A config recorded before defenses existed reads as undefended (ExperimentConfig.from_dict)."""
    spec = DEFENSES[cfg.defense]
    return spec.model(model) if spec.model else model


def prepare_loop(trainer):
    """The step hook (training/hooks.py) by which cfg's defense changes the training step (dp: DP-SGD), or None
    for a loss-only defense."""
    spec = DEFENSES[trainer.cfg.defense]
    return spec.loop(trainer) if spec.loop else None


def defense_summary(cfg, num_train: int, batch: int, iters: int) -> dict:
    """Fields the defense adds to each model's summary (dp: epsilon at delta); cfg is the loop's config."""
    spec = DEFENSES[cfg.defense]
    return spec.summary(cfg, num_train, batch, iters, cfg.epochs) if spec.summary else {}


__all__ = ["DEFENSES", "NONE", "DefenseSpec", "Param", "build_loss", "check_defense", "defended_model", "defense_summary",
           "param", "param_fields", "param_flags", "params", "prepare_loop", "with_defaults"]
