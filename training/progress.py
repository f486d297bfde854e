"""One line per finished model: what is done, what remains, and an estimate of the time left."""
from __future__ import annotations

import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, label: str = "models"):
        self.total, self.done, self.label, self.t0 = total, 0, label, time.time()

    def finished(self, items: list[tuple[str, dict | None]]) -> list[str]:
        """Models that finished together, (label, summary) each: a pack, or one model. One line per model;
        the last one also says what is left and the estimate, which counts the whole pack as done: its
        models finish at one moment, and extrapolating from the first of them alone would multiply the
        time left by the pack size (a pack of 9 read "5h01m remaining" of a 35-minute study)."""
        if not items:
            return []
        lines = []
        for what, summary in items:
            self.done += 1
            acc = f" test_acc {summary['test_acc']:.4f}" if summary and "test_acc" in summary else ""
            lines.append(f"[{self.done}/{self.total} {self.label}] {what} done{acc}")
        elapsed = time.time() - self.t0
        left = self.total - self.done
        eta = elapsed / self.done * left
        lines[-1] += f"; {left} left, ~{_fmt(eta)} remaining (elapsed {_fmt(elapsed)})"
        for line in lines:
            tqdm.write(line)
        return lines


def _fmt(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
