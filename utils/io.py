"""Atomic writes (temp file in the same directory, then os.replace) and checked reads.

Every artifact the pipeline writes goes through these, so an interrupted run never leaves a
half-written file under a final name: a file either exists complete or not at all.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UsageError


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside `path`; on success rename it over `path`, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def save_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def load_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"corrupt JSON file {path}: {e}") from None


def save_npy(arr: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """np.load with one-line errors for missing, truncated or corrupt files."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"missing file: {path}") from None
    except (ValueError, OSError, EOFError) as e:
        raise UsageError(f"corrupt or truncated .npy file {path}: {e}") from None


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike, map_location="cpu") -> Any:
    """torch.load(weights_only=True) with one-line errors for missing or corrupt checkpoints."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"missing checkpoint: {path}") from None
    except Exception:  # zip/pickle errors come in many types; torch's own text advises weights_only=False,
        # i.e. running arbitrary code from a file of unknown origin: never pass that on
        raise UsageError(f"corrupt checkpoint {path}: not a valid checkpoint of this pipeline; retrain that model "
                         f"(re-run the same command with --skip-existing after deleting its COMPLETE marker)") from None


def save_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
