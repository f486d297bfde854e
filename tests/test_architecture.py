"""The layout's rules, checked on the source (ast): training/ produces and mia/ consumes the run directory
and neither imports the other (the contract lives in artifacts/), every package has a layer and no import
runs up a layer (LAYERS), no import cycle anywhere (imports inside functions included), no sys.path edits
(the project is installed, requirements.txt)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The layer order, the one place it is written: a module may import from its own layer and below, never
# above. Keys are packages, or modules where one module of a package sits elsewhere (the longest prefix
# decides). utils/ is plumbing; artifacts/ is the contract between stages (output paths, the run
# directory's reader, the results schema); the registries of building blocks; configs/ reads every registry
# (help texts, validation: the attack registry included); mia/ attacks what training/ wrote, through
# artifacts/ only, and training/ imports nothing of mia/ (test_training_imports_nothing_from_mia);
# analysis/ compares configurations from result files; the scripts (top-level, the seed's scripts under
# mia/ and the one parser they share) sit above everything.
SCRIPTS = 7
LAYERS = {"utils": 0, "artifacts": 1, "configs.method_options": 1,
          "data": 2, "models": 2, "pruning": 2, "defenses": 2,
          "mia": 3, "configs": 4, "training": 5, "analysis": 6,
          "mia.cli": SCRIPTS, "mia.unified_mia_evaluation": SCRIPTS, "mia.run_mia_evaluation": SCRIPTS,
          "mia.compare": SCRIPTS, "mia.mia_advanced": SCRIPTS, "mia.mia_wemem": SCRIPTS, "mia.mia_classic": SCRIPTS}
PACKAGES = tuple(dict.fromkeys(k.split(".")[0] for k in LAYERS))


def layer(module: str, scripts: set[str]) -> int:
    """The layer of a dotted module name: the longest LAYERS key that prefixes it; a top-level script: SCRIPTS."""
    if module in scripts:
        return SCRIPTS
    parts = module.split(".")
    return next(LAYERS[".".join(parts[:k])] for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in LAYERS)


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the project's packages and top-level scripts."""
    found = {p.stem: p for p in ROOT.glob("*.py")}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in a file ('from pkg import mod' counts as pkg.mod)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def test_every_package_has_a_layer():
    """A new package is placed in the order, not checked by no rule."""
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert on_disk == set(PACKAGES), on_disk ^ set(PACKAGES)


def _crossing(a: str, b: str) -> dict[str, list[str]]:
    return {m: sorted(i for i in deps if i.split(".")[0] == b)
            for m, deps in graph().items() if m.split(".")[0] == a and any(i.split(".")[0] == b for i in deps)}


def test_mia_imports_nothing_from_training():
    assert not _crossing("mia", "training")


def test_training_imports_nothing_from_mia():
    """The producer does not import its consumer: training/ reaches the run directory's contract through
    artifacts/, never through mia/."""
    assert not _crossing("training", "mia")
    assert "artifacts.rundir" in graph()["training.signals"]  # the check sees training/'s imports


def test_layer_order():
    g = graph()
    scripts = {p.stem for p in ROOT.glob("*.py")}
    up = sorted((m, d) for m, deps in g.items() for d in deps if layer(d, scripts) > layer(m, scripts))
    assert not up, up
    # the check sees every package: edges into each layer from above are found
    assert "mia.attacks" in g["analysis.per_example"] and "defenses.dp" in g["mia.epsilon"]
    assert layer("configs.method_options", scripts) < layer("pruning.pruner", scripts) < layer("configs.config", scripts)
    planted = {**g, "artifacts.paths": g["artifacts.paths"] | {"analysis.report"}}
    assert [(m, d) for m, deps in planted.items() for d in deps if layer(d, scripts) > layer(m, scripts)]


def test_analysis_uses_no_private_name_of_another_package():
    """analysis/ reads public interfaces only (a leading underscore is a module's own business)."""
    bad = []
    for p in (ROOT / "analysis").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("analysis"):
                bad += [f"{p.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad


def test_no_import_cycle():
    g = graph()
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles[:3]
    g["utils.io"] = g["utils.io"] | {"training.trainer"}  # the same search finds a planted cycle
    state.clear()
    visit("utils.io", ["utils.io"])
    assert cycles


def test_the_checks_see_real_edges():
    """The graph is not empty by accident: known edges are found, function-level imports included."""
    g = graph()
    assert "training.trainer" in g["training.experiment"] and "mia.nn_attacks" in g["mia.attacks"]
    assert "analysis.report" in g["mia.unified_mia_evaluation"]  # 'from analysis import report'
    assert "pruning" in g["configs.config"]  # imported inside ExperimentConfig.resolved()


def test_no_sys_path_edits_in_project_code():
    offenders = [str(p.relative_to(ROOT)) for pkg in (*PACKAGES, "benchmarks") for p in (ROOT / pkg).rglob("*.py")
                 if "sys.path.insert" in p.read_text()] + [p.name for p in ROOT.glob("*.py") if "sys.path.insert" in p.read_text()]
    assert not offenders
