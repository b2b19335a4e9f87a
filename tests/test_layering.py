"""Architecture guard: the science core stays free of orchestration dependencies."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_CORE = {"ray", "mlflow", "pipelines"}


def imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def python_files(folder: str, pattern: str) -> list[Path]:
    return sorted((ROOT / folder).glob(pattern))


def test_core_has_python_files():
    assert python_files("mia_core", "**/*.py")


@pytest.mark.parametrize(
    "path", python_files("mia_core", "**/*.py"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_mia_core_does_not_import_orchestration(path):
    bad = imported_top_modules(path) & FORBIDDEN_IN_CORE
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_ray_jobs_do_not_import_torch():
    offenders = {
        str(path.relative_to(ROOT)): "torch"
        for path in python_files("ray_jobs", "*.py")
        if "torch" in imported_top_modules(path)
    }
    assert not offenders, f"ray_jobs must delegate to pipelines, not use torch: {offenders}"


def test_import_scanner_sees_nested_and_from_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os.path\nfrom ray.tune import x\ndef f():\n    import mlflow\n")
    assert imported_top_modules(src) == {"os", "ray", "mlflow"}


# --- pipelines: rooms by role, imports pointing one way, no hidden cycles -----------------

# A room may import only the rooms before it (and itself). ``jobs`` is the one top-level
# module between the tasks and the workflows that train many runs.
ROOMS = ("data", "tracking", "cluster", "engine", "reports", "tasks", "jobs", "codecs", "studies")
PROJECT = ("mia_core", "pipelines", "ray_jobs")


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "pipelines" and len(parts) > 1 else None


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def project_imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, at_top_level)`` for every import of a project module in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in PROJECT:
                found.append((name, id(node) in top))
    return found


PIPELINES_FILES = sorted((ROOT / "pipelines").rglob("*.py"))
ALL_FILES = sorted(p for d in (*PROJECT, "tests", "benchmarks") for p in (ROOT / d).rglob("*.py"))


def test_pipelines_is_grouped_in_rooms_with_rules():
    top_level = sorted(p.name for p in (ROOT / "pipelines").glob("*.py"))
    assert top_level == ["__init__.py", "jobs.py"], top_level
    rooms = sorted(
        p.name for p in (ROOT / "pipelines").iterdir() if p.is_dir() and p.name[0] != "_"
    )
    assert rooms == sorted(r for r in ROOMS if r != "jobs")
    for room in rooms:
        doc = ast.get_docstring(ast.parse((ROOT / "pipelines" / room / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"pipelines/{room}/__init__.py states no rule"


@pytest.mark.parametrize("path", PIPELINES_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_rooms_import_only_earlier_rooms(path):
    own = room_of(module_name(path))
    if own is None:  # pipelines/__init__.py
        return
    for name, _ in project_imports(path):
        if name.startswith("ray_jobs"):
            pytest.fail(
                f"{path.relative_to(ROOT)} imports {name}: pipelines never imports ray_jobs"
            )
        other = room_of(name)
        if other is None:
            continue
        assert ROOMS.index(other) <= ROOMS.index(own), (
            f"{path.relative_to(ROOT)} ({own}) imports {name} ({other}); order is {ROOMS}"
        )


@pytest.mark.parametrize(
    "path",
    sorted(p for d in PROJECT for p in (ROOT / d).rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_function_local_imports_of_project_modules(path):
    hidden = [name for name, top in project_imports(path) if not top]
    assert not hidden, f"{path.relative_to(ROOT)} imports {hidden} inside a function or class"


def test_no_import_cycles():
    files = {module_name(p): p for d in PROJECT for p in (ROOT / d).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        for target, _ in project_imports(path):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.setdefault(name, set()).add(target)
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(files):
        if name not in state:
            visit(name, [name])


def test_engine_never_names_a_task():
    for path in sorted((ROOT / "pipelines" / "engine").glob("*.py")):
        text = path.read_text()
        for word in ('"mwt"', '"mia"', '"cavia"', '"mcl_nf"', "method.name =="):
            assert word not in text, f"{path.relative_to(ROOT)} names a task: {word}"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_under_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 400, f"{path.relative_to(ROOT)} has {lines} lines (limit 400)"


def test_ray_jobs_do_not_edit_sys_path():
    for path in python_files("ray_jobs", "*.py"):
        assert "sys.path" not in path.read_text(), f"{path.relative_to(ROOT)} edits sys.path"
