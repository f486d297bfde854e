"""DP-SGD (Abadi et al., CCS 2016) through Opacus (pytorch/opacus): each example's gradient clipped to norm
--dp-clip, Gaussian noise of standard deviation --dp-noise x --dp-clip added to their sum, divided by the
batch size; epsilon at delta from Opacus's RDP accountant (Mironov 2017) over the run's steps.

    g = (sum_i g_i * min(1, C / ||g_i||) + N(0, sigma^2 C^2 I)) / B

What changes in the model and the loop, and why:
- BatchNorm mixes the examples of a batch, so one example's gradient is not its own: Opacus refuses it, and
  opacus.validators.ModuleValidator.fix replaces every BatchNorm with a GroupNorm (min(32, C) groups); the
  run's summary records it (normalization: GroupNorm) and load_model rebuilds the same model.
- Per-example gradients come from opacus.GradSampleModule hooks; clipping and noise from opacus's
  DPOptimizer.pre_step, run as the Trainer's step hook (DPSGDStep, training/hooks.py) after the backward pass;
  the run's own SGD then steps (same learning rate, momentum, weight decay and schedule).
- Masks keep their semantics: for static, gmp and frozen DPF a pruned weight has no gradient, so the
  per-example gradients are masked before clipping (the clip budget goes to live weights) and the pruner
  re-zeroes pruned weights after every step as without DP: noise never revives one. DPF before its freeze
  passes the full gradient straight through to its dense weights, noise included, as it does without DP.
- One model at a time (--pack 1): per-example clipping is of one model's gradient; in fp32 (--no-amp is
  implied): the clip bound needs each example's exact gradient norm, not a bf16 rounding of it; and in
  the contiguous memory format (--no-channels-last implied): Opacus 1.6's per-example convolution
  gradients are wrong for channels_last activations (tests/test_dp.py: the noiseless, unclipped DP step
  of a residual block's convolution came out ~1e-3 of plain SGD's with channels_last, equal without).
- The accountant assumes Poisson sampling at rate q = B / n; batches here are a shuffled partition of the
  training set (fixed size), the usual approximation (Opacus's poisson_sampling=False).
"""
from __future__ import annotations

import importlib.util
import math
import warnings

import torch

from utils.errors import UsageError

NORMALIZATION = "GroupNorm"  # what replaces BatchNorm (ModuleValidator.fix), recorded in the summary


def default_delta(num_train: int) -> float:
    """1 / training-set size rounded down to a power of 10 (1,000 -> 1e-3; 25,000 -> 1e-5): the delta of a
    DP model's accountant and of every empirical bound (mia/epsilon.py)."""
    return 10.0 ** -math.ceil(math.log10(max(int(num_train), 1)))


def require_opacus() -> None:
    if importlib.util.find_spec("opacus") is None:
        raise UsageError("--defense dp needs Opacus, which is not installed: pip install opacus (1.6 needs torch >= 2.6)")


def check(cfg) -> None:
    """Opacus installed; not a method that fine-tunes a trained model: that model is an undefended BatchNorm
    model (training/sources.py), and DP-SGD trains a GroupNorm model from its initialisation."""
    from pruning import PRUNING_METHODS

    require_opacus()
    spec = PRUNING_METHODS.get(cfg.method)  # an unknown method is named by the config's validation
    if getattr(spec, "source", None):
        raise UsageError(f"--defense dp trains a GroupNorm model from scratch; --prune-method {cfg.method} fine-tunes "
                         f"a trained BatchNorm model: use a method that prunes during training (static, gmp, dpf)")


def private_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model Opacus can train: every BatchNorm replaced by a GroupNorm."""
    from opacus.validators import ModuleValidator

    return ModuleValidator.fix(model)


def epsilon(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    """Opacus's RDP accountant after `steps` steps of DP-SGD with noise multiplier `noise` at `sample_rate`."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise, sample_rate, steps)]  # what `steps` calls of acc.step(...) record
    return float(acc.get_epsilon(delta)) if noise > 0 else float("inf")


class DPSGDStep:
    """DP-SGD as a step hook of the Trainer (training/hooks.py): the step's forward and backward run through
    Opacus's GradSampleModule (per-example gradients), and after_backward turns them into the step's gradient
    with Opacus's DPOptimizer.pre_step (clip each example's gradient, sum, add the noise, divide by the batch):
    the Trainer's own SGD (its learning rate, momentum, weight decay and schedule) then steps with it. It runs
    after the pruning hook: for static, gmp and frozen DPF a pruned weight has no gradient, so the per-example
    gradients are masked first (the clip budget goes to live weights); DPF before its freeze passes the full
    gradient straight through to its dense weights, noise included. The noise is drawn from its own stream
    (`generator`, seeded from the model's seed + 1), which the Trainer's state saves."""

    def __init__(self, tr):
        from opacus.optimizers import DPOptimizer

        if len(tr.seats) != 1:
            raise UsageError("--defense dp trains one model at a time (per-example clipping of one model's gradient): use --pack 1")
        seat, cfg = tr.seats[0], tr.cfg
        self.pruner = seat.pruner
        self.generator = torch.Generator(device=tr.device).manual_seed(seat.seed + 1)  # its own stream
        # clips and noises the gradients of tr.opt's parameters; never steps (the Trainer's SGD does)
        self.optimizer = DPOptimizer(tr.opt, noise_multiplier=cfg.dp_noise, max_grad_norm=cfg.dp_clip,
                                     expected_batch_size=tr.batch, generator=self.generator)

    def step_network(self, net: torch.nn.Module) -> torch.nn.Module:
        from opacus import GradSampleModule

        # Opacus's hooks are full backward hooks on every layer; the first one's input (the images) needs no gradient
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs")
        return GradSampleModule(net, batch_first=True, loss_reduction="mean")

    def before_step(self, it: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)  # the last step's per-example gradients and their sum

    def after_backward(self) -> bool:
        pr = self.pruner
        if pr is not None and not pr.straight_through:  # static, gmp, frozen DPF: no gradient at m = 0
            with torch.no_grad():
                for p, m in zip(pr.params, pr.fmask_list):
                    if p.grad_sample is not None:
                        p.grad_sample.mul_(m)
        return self.optimizer.pre_step() is not False

    def after_optimizer_step(self) -> None:
        pass


def make_private(tr) -> DPSGDStep:
    """The step hook that turns a Trainer's loop into DP-SGD (DPSGDStep)."""
    return DPSGDStep(tr)


def record(cfg, num_train: int, batch: int, iters: int, epochs: int) -> dict:
    """What a DP model's summary says: epsilon at delta from the accountant, and what it rests on."""
    delta = cfg.dp_delta if cfg.dp_delta is not None else default_delta(num_train)
    q, steps = batch / num_train, epochs * iters
    return {"dp_epsilon": epsilon(cfg.dp_noise, q, steps, delta), "dp_delta": delta, "dp_sample_rate": q,
            "dp_steps": steps, "dp_accountant": "rdp (opacus)", "normalization": NORMALIZATION}
