"""The shape of the code: which package may import which, no import cycles, run-file names in one module."""
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tdmpc_glass", "experiments", "analysis", "videos")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules) -> set[str]:
    """Project modules a file imports anywhere (function-level imports included); relative imports resolved,
    `from package import module` counted as the module, `from module import name` as the module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: imports_of(path, files) for name, path in files.items()}


def find_cycle(edges):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    edges = graph()
    # a package's __init__ importing its own modules is not a cycle between modules
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_dependencies_point_one_way():
    for module, targets in graph().items():
        top = module.split(".")[0]
        if top == "tdmpc_glass":  # the library never imports the layers above it
            assert all(t.startswith("tdmpc_glass") for t in targets), (module, targets)
        if top == "analysis":  # analysis reads runs through the run-layout module only
            assert {t for t in targets if t.startswith("tdmpc_glass")} <= {"tdmpc_glass.runlayout"}, (module, targets)


def test_the_run_layout_module_uses_the_standard_library_only():
    tree = ast.parse((ROOT / "tdmpc_glass" / "runlayout.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


def test_run_file_names_are_written_only_in_the_run_layout_module():
    names = re.compile(r"""["'](config\.yaml|eval\.csv|train\.csv|status\.json|events\.jsonl|provenance\.jsonl"""
                       r"""|tracking\.json)["']""")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                 if p.name != "runlayout.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if names.search(line)]
    assert not offenders


def test_no_script_edits_sys_path():
    offenders = [str(p.relative_to(ROOT)) for pkg in PACKAGES + ("tests",) for p in (ROOT / pkg).rglob("*.py")
                 if p != Path(__file__) and "sys.path.insert" in p.read_text()]
    assert not offenders
