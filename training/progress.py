"""One line per finished model: what is done, what remains, and an estimate of the time left."""
from __future__ import annotations

import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, label: str = "models"):
        self.total, self.done, self.label, self.t0 = total, 0, label, time.time()

    def finished(self, what: str, summary: dict | None = None) -> str:
        self.done += 1
        elapsed = time.time() - self.t0
        left = self.total - self.done
        eta = elapsed / self.done * left
        acc = f" test_acc {summary['test_acc']:.4f}" if summary and "test_acc" in summary else ""
        line = (f"[{self.done}/{self.total} {self.label}] {what} done{acc}; "
                f"{left} left, ~{_fmt(eta)} remaining (elapsed {_fmt(elapsed)})")
        tqdm.write(line)
        return line


def _fmt(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
