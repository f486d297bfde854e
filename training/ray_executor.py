"""Ray executor: one Ray task per pack (models of one configuration trained at once, --pack; one
model per task with --pack 1), calling the same run_pack_task() as the local loop. Fractional GPUs pack several small models on one GPU; with a runs directory on a shared
filesystem the tasks may run on any node. A failed task is reported by configuration and model index;
the others finish, and `--skip-existing` redoes only what failed. A task runs in its worker's main thread,
so a SIGTERM that reaches the worker (SLURM signals every process of the job) stops its pack at the next step
boundary with its state written (training/trainer.stop_on_sigterm replaces Ray's own handler, which exits the
worker, for the training loop); the study then ends as a preempted one (exit 75, docs/long_runs.md).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from training.experiment import experiment_dir, plan_packs, run_pack_task
from training.sources import source_config, source_dir
from training.progress import Progress
from utils.errors import Preempted, UsageError

ROOT = str(Path(__file__).resolve().parents[1])


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line: ray.init() keeps retrying an unreachable address for minutes."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot connect to Ray at {address}: {e}") from None


def _init_ray(address: str | None):
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'ray>=2.9' (or use --executor local)") from None
    if not ray.is_initialized():
        # Workers import this repo from the same path (a shared checkout on every node of a cluster).
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}}
        try:
            if address:
                _check_reachable(address)
                ray.init(address=address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, runtime_env=env, log_to_driver=False)
        except UsageError:
            raise
        except Exception as e:  # ConnectionError, TimeoutError, RuntimeError across Ray versions
            raise UsageError(f"cannot connect to Ray at {address or 'a new local instance'}: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return ray


def _resources(ray, options) -> tuple[float, float]:
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = options.gpus_per_model
    if gpus is None:
        gpus = 1.0 if cluster_gpus else 0.0
    if gpus > 0 and cluster_gpus == 0:
        raise UsageError(f"--gpus-per-model {gpus} asked but the Ray cluster has no GPU; use --gpus-per-model 0")
    return float(options.cpus_per_model), float(gpus)


def worker_device(device: str) -> str:
    """The device a Ray worker trains on. Ray sets the worker's CUDA_VISIBLE_DEVICES to the GPU(s) it
    granted, renumbered from 0, so the driver's --device cuda:N (N >= 1) would be an invalid ordinal
    there: any CUDA device asked for (and auto, where the worker sees a GPU) is the worker's `cuda`."""
    if torch.cuda.is_available() and (device == "auto" or device.startswith("cuda")):
        return "cuda"
    return device


def _train(pack, *after):
    """Runs inside a Ray worker: the repo root must be importable there (runtime_env working_dir
    or a shared checkout on every node, see README). `after`: the results of the packs that train the
    models this pack fine-tunes from; Ray starts this task only once they are done (their values unused)."""
    pack = dataclasses.replace(pack, cfg=dataclasses.replace(pack.cfg, device=worker_device(pack.cfg.device)))
    return [{k: s[k] for k in ("model_index", "test_acc", "train_acc", "wall_time_s")} for s in run_pack_task(pack)]


def source_models(pack) -> list[tuple]:
    """(experiment dir, model index) of every model the pack's models start from (none when trained from scratch)."""
    return [(source_dir(pack.cfg), i) for i in pack.indices] if source_config(pack.cfg) else []


def run_ray(tasks, options) -> list[str]:
    if not tasks:
        return []
    ray = _init_ray(options.ray_address)
    cpus, gpus = _resources(ray, options)
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_train)
    pending, made = {}, {}  # made: (experiment dir, model index) -> the task training that model
    for p in plan_packs(tasks):  # sources come first (training/study.py), so their tasks exist already
        after = {made[k] for k in source_models(p) if k in made}
        ref = remote.remote(p, *after)
        made.update({(experiment_dir(p.cfg), i): ref for i in p.indices})
        pending[ref] = p
    progress, failures, preempted = Progress(len(tasks)), [], []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        pack = pending.pop(done[0])
        try:
            progress.finished([(pack.model_label(s["model_index"]), s) for s in ray.get(done[0])])
        except Exception as e:  # RayTaskError wraps the worker's exception
            cause = getattr(e, "cause", None) or e
            who = f"model {pack.indices[0]}" if len(pack.indices) == 1 else f"models {', '.join(map(str, pack.indices))}"
            msg = f"{pack.cfg.name} {who}: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
            print(f"FAILED {msg}")
            (preempted if isinstance(cause, Preempted) else failures).append(msg)
    if preempted:  # a worker stopped by SIGTERM wrote its state: the study continues with --skip-existing
        raise Preempted("; ".join(preempted + failures))
    return failures
