#!/usr/bin/env python
"""The original layout's name for the WeMeM suite: the same implementation as mia/mia_wemem.py."""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("mia_wemem.py")), run_name="__main__")
