"""Tests go through public functions: no test reads a private attribute (`x._name`) of the code it tests."""
import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# public API spelled with an underscore: namedtuple's methods, os._exit, the standard library's pure-Python
# pickler (the only one whose dispatch table a subclass may extend)
ALLOWED = {"_replace", "_fields", "_asdict", "_make", "_exit", "_Pickler"}


def private_reads(source: str) -> list[tuple[int, str]]:
    """(line, expression) of every `obj._name` attribute access whose object is not self or cls, and of every
    `from module import _name`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [(node.lineno, f"from {node.module} import {a.name}") for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__") and a.name not in ALLOWED]
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and node.attr not in ALLOWED
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_scan_finds_a_private_read():
    assert private_reads("x = pool._local.envs\nself._ok = 1\nt._replace(a=1)\n") == [(1, "pool._local")]
    assert private_reads("from a.b import _c, d\n") == [(1, "from a.b import _c")]


def test_no_test_reads_a_private_attribute():
    offenders = [f"{path.name}:{line}: {expr}" for path in sorted(TESTS.glob("*.py"))
                 for line, expr in private_reads(path.read_text())]
    assert offenders == []
