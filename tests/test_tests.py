"""The tests' own layering: no module under tests/ imports a test module (test_*.py) or
conftest.py; what several modules share is a fixture in conftest.py or a helper in a
plain module (helpers.py, tiny_methods.py, gin_query.py)."""
import ast
import glob
import os

TESTS = os.path.dirname(os.path.abspath(__file__))


def imported_modules(source: str) -> set[str]:
    """Every module a source imports, function-level imports included; `from a import b`
    counts as a and a.b (b may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def forbidden_imports(tests_dir: str) -> list[str]:
    """'module imports name' for each import of a test module or conftest under tests_dir."""
    paths = sorted(glob.glob(os.path.join(tests_dir, "*.py")))
    forbidden = {os.path.basename(p)[:-len(".py")] for p in paths
                 if os.path.basename(p).startswith("test_")} | {"conftest"}
    found = []
    for path in paths:
        with open(path) as f:
            for name in sorted(imported_modules(f.read())):
                if name.removeprefix("tests.") in forbidden:
                    found.append(f"{os.path.basename(path)} imports {name}")
    return found


def test_no_test_module_imports_another():
    assert forbidden_imports(TESTS) == []


def test_the_check_sees_every_form_of_import(tmp_path):
    (tmp_path / "test_a.py").write_text("X = 1\n")
    (tmp_path / "helpers.py").write_text("import os\n")
    (tmp_path / "test_b.py").write_text(
        "import helpers\nfrom test_a import X\n"
        "def f():\n    import tests.test_a\n    from tests import test_a\n")
    (tmp_path / "test_c.py").write_text("from conftest import shards\n")
    assert forbidden_imports(str(tmp_path)) == [
        "test_b.py imports test_a", "test_b.py imports tests.test_a",
        "test_c.py imports conftest"]
