#!/usr/bin/env python
"""The original layout's name for the WeMeM suite (confidence, entropy, modified entropy, NN, loss):
the same command as mia/mia_wemem.py, results in <results-dir>/mia/wemem/.

  python mia/mia_classic.py --runs-dir ./runs
"""
from mia.mia_wemem import main

if __name__ == "__main__":
    main()
