#!/usr/bin/env python
"""LiRA, Shokri-NN, Top3-NN, ClassLabel-NN and SAMIA (RMIA and offline LiRA as extras) on every
experiment of a runs directory; results in <results-dir>/mia/advanced/.

  python mia/mia_advanced.py --runs-dir ./runs [--attacks lira samia] [--targets all]
"""
from mia.cli import suite_main
from utils.errors import cli_main


@cli_main
def main(argv=None) -> None:
    suite_main("advanced", argv, __doc__)


if __name__ == "__main__":
    main()
