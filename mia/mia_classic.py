#!/usr/bin/env python
"""The original layout's name for the WeMeM suite (confidence, entropy, modified entropy, NN, loss):
the same command as mia/mia_wemem.py, results in <results-dir>/mia/wemem/.

  python mia/mia_classic.py --runs-dir ./runs
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mia.mia_wemem import main  # noqa: E402

if __name__ == "__main__":
    main()
