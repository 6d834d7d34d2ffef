"""A lower layer never imports a higher one (brief: maths < networks < training < tasks < domains < cli), and no
domain imports another. Relative imports (``from .. import x``, ``from ...tasks.base import y``) are resolved to
the module they name, every module of the package has a rank, and a probe shows the check fails on a violation."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "sciffusion"
# Rank of each top-level module or package of sciffusion. metrics and datasets are helpers of the tasks' scores and
# examples; they sit with the maths (they import nothing of sciffusion but the maths).
RANK = {"_version": 0, "diffusion": 0, "metrics": 0, "datasets": 0, "nets": 1, "training": 2, "tasks": 3,
        "domains": 4, "cli": 5, "__init__": 6, "__main__": 6}


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """``sciffusion/domains/climate/forecast.py`` -> ``["sciffusion", "domains", "climate", "forecast"]``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: pathlib.Path, root: pathlib.Path = ROOT) -> set[tuple[str, ...]]:
    """Absolute sciffusion module paths a file imports (relative imports resolved; ``from pkg import name`` counts
    ``pkg.name`` so that ``from .. import tasks`` is seen)."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target and target[0] == root.name:
                found.add(tuple(target))
                found |= {tuple(target + [a.name]) for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {tuple(a.name.split(".")) for a in node.names if a.name.split(".")[0] == root.name}
    return found


def violations(root: pathlib.Path = ROOT) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        if len(me) < 2:  # the package's own __init__: the public API imports everything
            continue
        layer = me[1]
        if layer not in RANK:
            out.append(f"{path.relative_to(root)}: module {layer!r} has no layer (add it to RANK)")
            continue
        for target in imported_modules(path, root):
            if len(target) < 2 or target[1] not in RANK:
                continue
            if RANK[target[1]] > RANK[layer]:
                out.append(f"{path.relative_to(root)} (layer {layer}) imports higher layer {'.'.join(target)}")
            if layer == "domains" and target[1] == "domains" and len(me) > 2 and len(target) > 2 \
                    and target[2] != me[2] and target[2] in {p.name for p in (root / "domains").iterdir()}:
                out.append(f"{path.relative_to(root)} (domain {me[2]}) imports another domain {'.'.join(target)}")
    return out


def test_no_upward_or_cross_domain_imports():
    assert violations() == []
    assert len(list(ROOT.rglob("*.py"))) >= 40  # every module was walked


@pytest.mark.parametrize("source, where, message", [
    ("from ..tasks.base import Task\n", "training/bad.py", "imports higher layer sciffusion.tasks"),
    ("from .. import cli\n", "diffusion/bad.py", "imports higher layer sciffusion.cli"),
    ("from ...domains.finance import scenarios\n", "domains/climate/bad.py", "imports another domain"),
    ("import sciffusion.training\n", "metrics.py", "imports higher layer sciffusion.training"),
    ("x = 1\n", "newthing.py", "has no layer"),
])
def test_the_check_fails_on_a_violation(tmp_path, source, where, message):
    root = tmp_path / "sciffusion"
    for d in ("diffusion", "training", "tasks", "domains/climate", "domains/finance"):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / where).write_text(source)
    found = violations(root)
    assert any(message in v for v in found), found


def module_files(root: pathlib.Path = ROOT) -> dict[tuple[str, ...], pathlib.Path]:
    """Every module of the package that is not a package ``__init__`` (those re-export; they are not cycles)."""
    return {tuple(module_name(p, root)): p for p in sorted(root.rglob("*.py")) if p.name != "__init__.py"}


def import_cycles(root: pathlib.Path = ROOT) -> list[list[str]]:
    """Cycles in the graph of module imports, counting imports inside functions too (a lazy import hides a cycle,
    it does not remove it). ``from pkg import mod`` points at ``pkg.mod``; a package ``__init__`` is not a node."""
    files = module_files(root)
    graph = {m: {t for t in imported_modules(p, root) if t in files and t != m} for m, p in files.items()}
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(m: tuple[str, ...], path: list[tuple[str, ...]]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([".".join(x) for x in path[path.index(t):] + [t]])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def private_imports(root: pathlib.Path = ROOT) -> list[str]:
    """``from .other import _helper``: a module reaching into another's private names (one of them should make it
    public, or it belongs in the other module)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(root.name)):
                if node.module == "_version" or (node.module or "").endswith("._version"):
                    continue
                out += [f"{path.relative_to(root)}: {a.name} from {'.' * node.level}{node.module or ''}"
                        for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_import_cycles():
    assert import_cycles() == []


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_the_cycle_and_private_checks_fail_on_a_violation(tmp_path):
    root = tmp_path / "sciffusion"
    (root / "domains").mkdir(parents=True)
    for f in ("__init__.py", "domains/__init__.py"):
        (root / f).write_text("")
    (root / "domains" / "a.py").write_text("from .b import thing\n")
    (root / "domains" / "b.py").write_text("def f():\n    from .a import _hidden\n")
    assert import_cycles(root) == [["sciffusion.domains.a", "sciffusion.domains.b", "sciffusion.domains.a"]]
    assert private_imports(root) == ["domains/b.py: _hidden from .a"]
