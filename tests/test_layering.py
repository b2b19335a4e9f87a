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
