"""Run a script's main() in the test process (no interpreter start) and collect its exit code and output."""
from __future__ import annotations


def run_main(main, argv, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of main(argv); capsys is pytest's fixture."""
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
