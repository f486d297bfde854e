"""Atomic writes (temp file in the same directory, then os.replace) and checked reads.

Every artifact the pipeline writes goes through these, so an interrupted run never leaves a
half-written file under a final name: a file either exists complete or not at all. A write the system
refuses (a full disk, a quota, no permission, a read-only file system) is one line naming the path
(WriteError); its temp file is removed and the file it would have replaced is left as it was.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UsageError, WriteError

# Registry: errno of a write the system refuses -> what the line says (other OSErrors stay tracebacks: a bug)
WRITE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "read-only file system"}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def _write_error(path: Path, e: OSError) -> WriteError:
    why = WRITE_ERRORS[e.errno]
    if e.errno in _NO_SPACE:
        try:
            why += f", {format_bytes(shutil.disk_usage(path.parent).free)} free there"
        except OSError:
            pass
    return WriteError(f"cannot write {path}: {why}", no_space=e.errno in _NO_SPACE)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside `path`; on success rename it over `path`, on failure remove it. A write
    the system refuses (WRITE_ERRORS) becomes a WriteError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        cause = e if isinstance(e, OSError) else e.__cause__ or e.__context__  # torch.save wraps its OSError
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRORS:
            raise _write_error(path, cause) from None
        raise


def format_bytes(n: float) -> str:
    """1.2 GB, 340 MB, 12 kB: sizes in the lines a user reads (decimal units, as df -H)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


class _Crc32:
    """zlib.crc32 behind hashlib's interface (update, hexdigest)."""

    def __init__(self):
        self.value = 0

    def update(self, chunk) -> None:
        self.value = zlib.crc32(chunk, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


# Registry: digest name -> a new hasher. A recorded digest names its algorithm ("crc32:...", "sha256:..."), so a
# summary written with any of these still verifies after the default changes.
DIGESTS = {"crc32": _Crc32, "sha256": hashlib.sha256, "blake2b": hashlib.blake2b, "sha1": hashlib.sha1}
# CRC-32: a checksum made for what the check guards against (a file edited, partially copied or rotted after
# training: accidental changes, not an adversary), 2.4x sha256 on a CPU with SHA instructions and more without
# them (benchmarks/integrity_cost.py, docs/benchmarks.md)
HASH = "crc32"
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike, algorithm: str = HASH) -> str:
    """The content digest of a file, "<algorithm>:<hex>", read in 1 MiB chunks (each model's summary records its
    artifacts' digests: training/trainer.py, training/signals.py; artifacts/rundir.py checks the signals' digests
    on every read, with the algorithm each records)."""
    if algorithm not in DIGESTS:
        raise UsageError(f"{path}: its recorded digest uses {algorithm!r}; this code knows {', '.join(DIGESTS)}")
    h = DIGESTS[algorithm]()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


def count_nonfinite(arr: np.ndarray, rows: int = 4096) -> int:
    """NaN and +-inf entries of a float array, memory-mapped or not, a block of rows at a time (the scan
    of a 6 GB logits file holds one block in memory, not a boolean copy of the whole array)."""
    if not np.issubdtype(arr.dtype, np.floating):
        return 0
    flat = arr.reshape(len(arr), -1) if arr.ndim else arr.reshape(1, 1)
    return int(sum(flat[i:i + rows].size - np.count_nonzero(np.isfinite(flat[i:i + rows]))
                   for i in range(0, len(flat), rows)))


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
        with open(tmp, "wb") as f:  # a Python file: a full disk is an OSError with its errno (torch's own
            torch.save(obj, f)      # file writer says only "unexpected pos")


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
