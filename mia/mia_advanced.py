#!/usr/bin/env python
"""LiRA, Shokri-NN, Top3-NN, ClassLabel-NN and SAMIA (RMIA and offline LiRA as extras) on every
experiment of a runs directory; results in <results-dir>/mia/advanced/.

  python mia/mia_advanced.py --runs-dir ./runs [--attacks lira samia] [--targets all]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mia.evaluate import suite_main  # noqa: E402
from utils.errors import cli_main  # noqa: E402


@cli_main
def main(argv=None) -> None:
    suite_main("advanced", argv, __doc__)


if __name__ == "__main__":
    main()
