"""The layout's rules, checked on the source (ast): training produces and mia/ consumes the run
directory (mia/ imports nothing from training/), analysis/ sits above both (LAYERS), no import cycle anywhere (imports inside functions
included: they used to dodge cycles), no sys.path edits (the project is installed, requirements.txt)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("configs", "data", "models", "pruning", "training", "mia", "analysis", "utils")
# Layer order of the packages that hand results on: a module may import from its own layer and below, never
# above. analysis/ reads what training/ wrote and what mia/ computed; the top-level scripts (train.py, ...) sit
# above everything. One edge goes up, by design: mia/report.py lays out every stage's tables, so it calls
# analysis.section (which imports nothing from mia/ or training/, so no cycle can form through it).
LAYERS = {"training": 1, "mia": 1, "analysis": 2}
UPWARD_EDGES = {("mia.report", "analysis.section"), ("mia.report", "analysis")}  # 'from analysis import section'


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


def test_mia_imports_nothing_from_training():
    bad = {m: sorted(i for i in deps if i.split(".")[0] == "training")
           for m, deps in graph().items() if m.split(".")[0] == "mia"}
    assert not {m: d for m, d in bad.items() if d}


def test_layer_order():
    known = modules()
    g = graph()
    scripts = {p.stem for p in ROOT.glob("*.py")}

    def layer(m):
        return 3 if m in scripts else LAYERS.get(m.split(".")[0], 0)

    up = {(m, d) for m, deps in g.items() for d in deps if layer(d) > layer(m)} - UPWARD_EDGES
    assert not up, sorted(up)
    for _, target in UPWARD_EDGES:
        assert not {d for d in g[target] if d.split(".")[0] in ("mia", "training")}, g[target]
    assert "analysis.stage" in known and "mia.attacks" in g["analysis.per_example"]  # the check sees analysis/
    assert ("mia.report", "analysis.section") in {(m, d) for m, deps in g.items() for d in deps}


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
    assert "mia.report" in g["mia.unified_mia_evaluation"]  # 'from mia import report'
    assert "pruning" in g["configs.config"]  # imported inside ExperimentConfig.resolved()


def test_no_sys_path_edits_in_project_code():
    offenders = [str(p.relative_to(ROOT)) for pkg in (*PACKAGES, "benchmarks") for p in (ROOT / pkg).rglob("*.py")
                 if "sys.path.insert" in p.read_text()] + [p.name for p in ROOT.glob("*.py") if "sys.path.insert" in p.read_text()]
    assert not offenders
