"""Models made from other models: which model a fine-tuned one starts from, and whether it is stale.

A method with a source (pruning/methods.py: finetune, filter_l1, filter_l2, slim, imp, lth) makes model i of its
configuration from model i of the source configuration: the same study (runs directory, dataset, arch,
recipe and keep matrix) with no pruning and no defense, i.e. the study's dense configuration. Model i
records where it came from (the source checkpoint's path, relative to the runs directory, and its SHA-256)
in its summary and checkpoint, so a changed source is seen from the files alone: the fine-tuned model is
then stale and is retrained, never silently reused (training/experiment.py pending_models).
This module is the one place that answers "which model needs which" for planning (train.py, run_experiment.py,
the Ray executor) and for training (experiment.run_pack loads the source weights and, for lth, the rewind point:
load_rewind).
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from artifacts import paths
from configs.config import FINETUNE_FIELDS, METHOD_OPTIONS, ExperimentConfig
from pruning import PRUNING_METHODS
from utils.errors import UsageError
from utils.io import load_json, load_torch


def source_config(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The configuration whose model i model i of `cfg` starts from; None for models trained from scratch.
    The source is undefended: as in mia_prune, a defense applies to the fine-tuning (docs/defenses.md)."""
    source = PRUNING_METHODS[cfg.method].source  # a method of the registry (dense)
    if source is None:
        return None
    undefended = {}
    if getattr(cfg, "defense", "none") != "none":
        from defenses import param_fields

        undefended = {"defense": "none", **{f: None for f in param_fields()}}
    return dataclasses.replace(cfg, method=source, sparsity=0.0, prune_scope="global", name=None,
                               target_epoch=None, freeze_epoch=None, model_index=None,
                               **{f: None for f in FINETUNE_FIELDS}, **{f: None for f in METHOD_OPTIONS},
                               **undefended).resolved()


def source_dir(cfg: ExperimentConfig) -> Path:
    src = source_config(cfg)
    return paths.experiment_dir(src.runs_dir, src.method, src.sparsity, src.dataset, getattr(src, "defense", "none"))


def source_checkpoint(cfg: ExperimentConfig, index: int) -> Path:
    return paths.model_dir(source_dir(cfg), index) / paths.BEST_MODEL


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def missing_sources(cfg: ExperimentConfig, indices: list[int]) -> list[int]:
    """Model indices whose source model is not complete (none for models trained from scratch)."""
    if source_config(cfg) is None:
        return []
    return [i for i in indices if not (paths.model_dir(source_dir(cfg), i) / paths.COMPLETE).exists()]


def provenance(cfg: ExperimentConfig, index: int) -> dict:
    """What model `index` of `cfg` is made from, as recorded in its summary and checkpoint."""
    ck = source_checkpoint(cfg, index)
    return {"config": source_config(cfg).name, "model_index": index,
            "checkpoint": str(ck.relative_to(Path(cfg.runs_dir))), "sha256": sha256(ck)}


def load_source(cfg: ExperimentConfig, index: int) -> tuple[dict, dict]:
    """(state_dict of the source model's selected checkpoint, its provenance). Refused with one line when
    the source is not complete: a fine-tune task never starts from a partial model."""
    if missing_sources(cfg, [index]):
        raise UsageError(f"{cfg.name} model {index} starts from {paths.model_dir(source_dir(cfg), index)}, "
                         f"which is not complete; train {source_config(cfg).name} model {index} first")
    record = provenance(cfg, index)
    return load_torch(source_checkpoint(cfg, index))["state_dict"], record


def rewinds(cfg: ExperimentConfig) -> bool:
    """Whether cfg's models rewind to a state of their source's training each round (lth)."""
    from pruning.iterative import ITERATIVE

    spec = PRUNING_METHODS[cfg.method]
    return bool(spec.iterative and ITERATIVE[spec.iterative].rewind)


def load_rewind(cfg: ExperimentConfig, index: int) -> tuple[dict, dict]:
    """lth: (dense model i's state at the end of epoch --rewind-epoch, where it comes from). From the dense run's
    rewind artifact (artifacts/paths.REWIND, written by its training); for epoch 0, a dense run made before that
    artifact existed has its initialisation regenerated from the seed (training/model_io.initial_state: the code
    that initialised it). Another epoch without the artifact: refused with one line naming the command that
    writes it (retraining dense model i; its lottery tickets are then stale and retrained too)."""
    from training.model_io import initial_state

    k, src_dir = cfg.rewind_epoch, paths.model_dir(source_dir(cfg), index)
    path = src_dir / paths.REWIND
    states = load_torch(path)["states"] if path.exists() else {}
    if k in states:
        return states[k], {"epoch": k, "file": str(path.relative_to(Path(cfg.runs_dir))), "sha256": sha256(path)}
    if k == 0:
        ck = load_torch(source_checkpoint(cfg, index))
        return initial_state(source_config(cfg), ck["num_classes"], ck["in_channels"], index), \
            {"epoch": 0, "file": None, "regenerated": "the initialisation, from the seed"}
    from configs.config import command_line

    raise UsageError(f"{cfg.name} model {index} rewinds to epoch {k} of {src_dir}, which has no {paths.REWIND} "
                     f"holding it (dense runs made before lth existed keep none; --rewind-epoch 0 needs none); write "
                     f"it by retraining that model: {command_line(source_config(cfg))} --model-index {index}")


def stale_reason(cfg: ExperimentConfig, index: int, model_dir: Path) -> str | None:
    """Why a complete fine-tuned model can't be reused: its source checkpoint is gone or changed since."""
    if source_config(cfg) is None:
        return None
    summary = model_dir / paths.SUMMARY
    recorded = load_json(summary).get("source", {}) if summary.exists() else {}
    ck = source_checkpoint(cfg, index)
    if not ck.exists():
        return f"its source {ck} is missing"
    if recorded.get("sha256") != sha256(ck):
        return f"its source {ck} changed since it was fine-tuned"
    return None
