#!/usr/bin/env python
"""Confidence, entropy, modified entropy (per-class thresholds) and the NN attack (loss as an extra)
on every experiment of a runs directory; results in <results-dir>/mia/wemem/.

  python mia/mia_wemem.py --runs-dir ./runs [--attacks confidence entropy] [--targets all]
"""
from mia.cli import suite_main
from utils.errors import cli_main


@cli_main
def main(argv=None) -> None:
    suite_main("wemem", argv, __doc__)


if __name__ == "__main__":
    main()
