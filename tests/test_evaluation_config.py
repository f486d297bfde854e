"""configs/evaluation.py: one EvaluationConfig generates the evaluation flags of train.py, every mia/ script
and mia/compare.py, validates them once, and names the three seeds apart; --shadows-from is resolved by one
function. No training: the scripts are parsed, or stop at their first refusal."""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import train
from artifacts import paths
from configs.evaluation import (ATTACK_FIELDS, COMPARE_FIELDS, FIELDS, EvaluationConfig, add_evaluation_args,
                                evaluation_from_args)
from mia import compare, mia_advanced, mia_classic, mia_wemem, run_mia_evaluation, unified_mia_evaluation
from mia.attacks import ATTACKS, suite_attacks
from mia.cli import mia_parser
from mia.evaluate import check_same_study, resolve_shadows_from
from utils.errors import UsageError
from tests.script_runs import run_main

SCRIPTS = {"mia_advanced": mia_advanced.main, "mia_wemem": mia_wemem.main, "mia_classic": mia_classic.main,
           "run_mia_evaluation": run_mia_evaluation.main, "unified": unified_mia_evaluation.main}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help_of(text: str, flag: str) -> str:
    """The help paragraph of one flag in an argparse --help text, whitespace folded."""
    m = re.search(rf"\n  {re.escape(flag)}\b[^\n]*\n?(.*?)(?=\n  -|\n\n|\Z)", text, re.S)
    assert m, flag
    return " ".join(m.group(0).split())


def test_every_script_gets_its_evaluation_flags_with_the_dataclass_help(capsys):
    """The same flag, the same help text (the field's metadata), in each script that takes it."""
    wanted = {"train": FIELDS, "compare": ("results_dir", *COMPARE_FIELDS),
              "unified": ("results_dir", *ATTACK_FIELDS, *COMPARE_FIELDS),
              **{k: ("results_dir", *ATTACK_FIELDS) for k in ("mia_advanced", "mia_wemem", "mia_classic", "run_mia_evaluation")}}
    mains = {"train": train.main, "compare": compare.main, **SCRIPTS}
    seen = {}
    for script, names in wanted.items():
        code, out, _ = run_main(mains[script], ["--help"], capsys)
        assert code == 0, script
        for name in FIELDS:
            assert (_flag(name) in out) == (name in names), (script, name)
        for name in names:
            seen.setdefault(name, set()).add(_help_of(out, _flag(name)).split(" ", 2)[-1].split("(default")[0])
    for f in fields(EvaluationConfig):  # one text per flag across scripts, and it is the field's own
        first_words = " ".join(f.metadata["help"].split()[:4])
        assert all(first_words in h for h in seen[f.name]), (f.name, seen[f.name])
    code, out, _ = run_main(mia_advanced.main, ["--help"], capsys)  # a script's own default: the suite's attacks
    assert f"(default: {suite_attacks('advanced')})" in _help_of(out, "--attacks")


@pytest.mark.parametrize("argv, message", [
    (["--attacks", "lira", "nosuch"], "unknown attack 'nosuch'"),
    (["--targets", "0,x"], "--targets must be 'all'"),
    (["--n-boot", "1"], "--n-boot must be >= 2"),
    (["--level", "1.5"], "--level in (0, 1)"),
    (["--pairs", "dense"], "--pairs takes A:B"),
])
def test_bad_evaluation_flags_are_one_line_and_the_same_in_every_script(argv, message, capsys, tmp_path):
    """validate() is the one check: train.py (before any training), a mia/ script and mia/compare.py give
    the same line and exit 2 (a flag a script does not take is argparse's own refusal, also exit 2)."""
    runs = ["--runs-dir", str(tmp_path / "none")]
    cases = [(train.main, ["--dataset", "digits", "--runs-dir", str(tmp_path / "r"), "--dry-run", *argv]),
             (unified_mia_evaluation.main, [*runs, *argv])]
    if argv[0] in ("--n-boot", "--level", "--pairs"):
        cases.append((compare.main, ["--results-dir", str(tmp_path), *argv]))
    else:
        cases.append((mia_wemem.main, [*runs, *argv]))
    for main, args in cases:
        code, _, err = run_main(main, args, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (main.__module__, err)
    assert not (tmp_path / "r").exists()


def test_three_seeds_with_their_defaults():
    """--attack-seed defaults to train.py's --seed (0 in the mia/ scripts), --bootstrap-seed to the attack
    seed: the numbers every command gave when one --seed meant all three."""
    cfg = EvaluationConfig()
    assert cfg.attack_settings("cpu").seed == 0 and cfg.attack_settings("cpu", training_seed=7).seed == 7
    assert cfg.compare_settings().seed == 0 and cfg.compare_settings(attack_seed=7).seed == 7
    cfg = EvaluationConfig(attack_seed=3, bootstrap_seed=5, n_boot=50, level=0.9, min_class_count=4)
    assert cfg.attack_settings("cpu", training_seed=7).seed == 3
    s = cfg.compare_settings(attack_seed=3)
    assert (s.seed, s.n_boot, s.level, s.min_class_count) == (5, 50, 0.9, 4)
    p = train.build_parser()
    args = p.parse_args(["--seed", "9"])
    assert (args.seed, args.attack_seed, args.bootstrap_seed) == (9, None, None)  # the training seed only


def test_seed_is_a_deprecated_alias_of_what_it_meant(capsys):
    """A mia/ script's --seed was the attack seed, mia/compare.py's the bootstrap seed: both still work,
    with one line; an explicit new flag wins."""
    p = mia_parser("", list(ATTACKS))
    cfg = evaluation_from_args(p.parse_args(["--seed", "3"]))
    assert (cfg.attack_seed, cfg.bootstrap_seed) == (3, None)
    assert "--seed is deprecated" in capsys.readouterr().err
    assert evaluation_from_args(p.parse_args(["--seed", "3", "--attack-seed", "4"])).attack_seed == 4
    capsys.readouterr()
    assert evaluation_from_args(p.parse_args([])).attack_seed is None
    assert capsys.readouterr().err == ""
    import argparse

    from configs.evaluation import add_seed_alias

    q = argparse.ArgumentParser()
    add_evaluation_args(q, ("results_dir", *COMPARE_FIELDS))
    add_seed_alias(q, "bootstrap_seed")
    cfg = evaluation_from_args(q.parse_args(["--seed", "5"]))
    assert cfg.bootstrap_seed == 5 and cfg.compare_settings().seed == 5 and cfg.attack_seed is None


def _experiment(root: Path, keep_seed: int = 0, labels_shift: int = 0) -> Path:
    root.mkdir(parents=True)
    keep = np.random.default_rng(keep_seed).random((3, 10)) < 0.5
    np.save(root / paths.KEEP_MATRIX, keep)
    np.save(root / paths.LABELS, (np.arange(10) + labels_shift) % 4)
    return root


def test_shadows_from_is_resolved_by_one_function(tmp_path):
    """A configuration name of the study, or an experiment directory; anything else one line that serves
    train.py (planned names) and the mia/ scripts (names found) alike."""
    exp = _experiment(tmp_path / "dense")
    assert resolve_shadows_from("dense", ["dense", "static_0.9"]) == "dense"
    assert resolve_shadows_from(str(exp), ["static_0.9"]) == exp
    with pytest.raises(UsageError, match=r"--shadows-from gmp_0.5: no such configuration for dataset digits: "
                                         r"not a configuration of this study \(dense, static_0.9\)"):
        resolve_shadows_from("gmp_0.5", ["static_0.9", "dense"], " for dataset digits")


def test_the_same_study_rule_checks_keep_matrix_and_labels(tmp_path):
    a = _experiment(tmp_path / "a")
    check_same_study(_experiment(tmp_path / "b"), a, "b")  # same keep matrix and labels: no error
    with pytest.raises(UsageError, match="different keep matrices"):
        check_same_study(_experiment(tmp_path / "c", keep_seed=1), a, "c")
    with pytest.raises(UsageError, match="different keep matrices or pools"):
        check_same_study(_experiment(tmp_path / "d", labels_shift=1), a, "d")
