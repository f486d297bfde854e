#!/usr/bin/env python
"""Confidence, entropy, modified entropy (per-class thresholds) and the NN attack (loss as an extra)
on every experiment of a runs directory; results in <results-dir>/mia/wemem/.

  python mia/mia_wemem.py --runs-dir ./runs [--attacks confidence entropy] [--targets all]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mia.evaluate import suite_main  # noqa: E402
from utils.errors import cli_main  # noqa: E402


@cli_main
def main(argv=None) -> None:
    suite_main("wemem", argv, __doc__)


if __name__ == "__main__":
    main()
