"""The package's imports (function-level ones included) form no cycle and respect the
layers: the library knows nothing of the tools (tfrecords_tools uses it, not the
other way round), data/ and models/ know nothing above them, evaluation/ knows no objective,
training/ knows no method, and no library module imports an entry point."""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("video_ssl", "tfrecords_tools")
ENTRY_POINTS = {"video_ssl.train", "video_ssl.evaluate", "video_ssl.export", "video_ssl.launch",
                "video_ssl.extract"}
# (importer prefix, forbidden prefixes)
RULES = [
    ("video_ssl", ("tfrecords_tools",)),
    ("video_ssl.data", ("video_ssl.methods", "video_ssl.evaluation", "video_ssl.models",
                        "video_ssl.losses", "video_ssl.optim", "video_ssl.config",
                        "video_ssl.pretrained", "video_ssl.serving", *ENTRY_POINTS)),
    ("video_ssl.models", ("video_ssl.methods", "video_ssl.evaluation", "video_ssl.data",
                          "video_ssl.losses", "video_ssl.config", "video_ssl.pretrained",
                          "video_ssl.serving", *ENTRY_POINTS)),
    ("video_ssl.evaluation", ("video_ssl.methods", "video_ssl.losses", "video_ssl.config",
                              "video_ssl.pretrained", *ENTRY_POINTS)),
    ("video_ssl.methods", ("video_ssl.evaluation", "video_ssl.config", "video_ssl.pretrained",
                           "video_ssl.serving", *ENTRY_POINTS)),
    ("video_ssl.serving", ("video_ssl.methods", "video_ssl.evaluation", *ENTRY_POINTS)),
    ("video_ssl.pretrained", tuple(ENTRY_POINTS)),
    # The training machinery is handed a method; it knows none.
    ("video_ssl.training", ("video_ssl.methods", "video_ssl.losses", "video_ssl.evaluation",
                            "video_ssl.pretrained", *ENTRY_POINTS)),
]


def _modules() -> dict[str, str]:
    modules = {}
    for package in PACKAGES:
        for root, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    modules[dotted.removesuffix(".__init__")] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from a.b import c` imports a.b.c when c is a module, else a.b.
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                         else node.module for a in node.names]
            else:
                continue
            edges |= {name for name in names if name in modules and name != module}
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in graph.items():
        for prefix, forbidden in RULES:
            if module == prefix or module.startswith(prefix + "."):
                found += [f"{module} imports {name}" for name in sorted(imported)
                          if any(name == f or name.startswith(f + ".") for f in forbidden)]
        if module not in ENTRY_POINTS:
            found += [f"{module} imports the entry point {name}"
                      for name in sorted(imported & ENTRY_POINTS)]
    return found


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_layers_import_one_way():
    assert violations(import_graph()) == []


def test_the_checks_can_fail():
    graph = {"video_ssl.data.a": {"video_ssl.methods.base"}, "video_ssl.methods.base": set(),
             "video_ssl.x": {"video_ssl.y"}, "video_ssl.y": {"video_ssl.x"},
             "video_ssl.evaluation.k": {"video_ssl.train"},
             "video_ssl.extraction.inputs": {"tfrecords_tools.cli"}}
    assert find_cycle(graph) == ["video_ssl.x", "video_ssl.y", "video_ssl.x"]
    assert violations(graph) == [
        "video_ssl.data.a imports video_ssl.methods.base",
        "video_ssl.evaluation.k imports video_ssl.train",
        "video_ssl.evaluation.k imports the entry point video_ssl.train",
        "video_ssl.extraction.inputs imports tfrecords_tools.cli"]


def test_the_graph_sees_function_level_imports():
    # config.demo_files imports the demo builder inside the function.
    assert "video_ssl.data.demo" in import_graph()["video_ssl.config"]


def long_functions(path: str, limit: int = 60) -> list[str]:
    """`name (N lines)` for each function or method in `path` longer than `limit` lines
    (its decorators left out, its docstring counted)."""
    tree = ast.parse(open(path).read(), path)
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_entry_points_only_wire():
    """No function over 60 lines in an entry point: the work lives in the library
    (the trainer's phases in video_ssl.training.runner)."""
    modules = _modules()
    found = {name: long_functions(modules[name]) for name in sorted(ENTRY_POINTS)}
    assert {name: functions for name, functions in found.items() if functions} == {}


def test_the_length_check_can_fail(tmp_path):
    path = tmp_path / "long.py"
    path.write_text("def f():\n" + "    x = 1\n" * 60 + "\n\ndef g():\n    pass\n")
    assert long_functions(str(path)) == ["f (61 lines)"]
