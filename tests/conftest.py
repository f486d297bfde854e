"""Shared fixtures: tiny configs on the embedded digits data (no download, no shared/ files).
The project's packages import because requirements.txt installs it editable (-e .)."""
from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N (pytest-xdist): one core per worker, so its torch and every script it starts run one
    # thread (N processes of several threads each on N cores crawl: OpenMP threads spin waiting for a core)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def tiny_cfg(tmp_path):
    """A dense ResNet-20 on digits trained for 2 short epochs: seconds on a CPU."""
    from configs.config import ExperimentConfig

    return ExperimentConfig(dataset="digits", arch="resnet", layers=20, epochs=2, batch_size=64,
                            runs_dir=str(tmp_path / "runs"), device="cpu", sens_draws=2)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions on shared, busy cores: a second OpenMP thread only slows them down (up to ~100x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
