"""The docs site and the README: short README, every page in the nav, blocks where written.

Fast checks without running MkDocs (``scripts/test.sh`` builds the site with ``--strict``):
the README stays an overview, ``mkdocs.yml``'s nav and ``docs/`` agree, every generated
block has its markers once, on the page its writer writes, and the site hook publishes the
figures that generated blocks link outside ``docs/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pipelines.reports.readme_blocks import markers
from pipelines.studies.continual_study import CONTINUAL
from pipelines.studies.mwt_study import MWT
from ray_jobs import encode, reproduce
from ray_jobs.cli import COMMANDS
from scripts import mkdocs_hooks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def nav_pages(node) -> list[str]:
    """Every page path named in a ``nav`` tree (lists of pages or ``{title: subtree}``)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in nav_pages(item)]
    return [p for value in node.values() for p in nav_pages(value)]


def benchmark_page(script: str) -> str:
    """``PAGE`` of a benchmark script, read from its source (they run from benchmarks/)."""
    tree = ast.parse((ROOT / "benchmarks" / script).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["PAGE"]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"benchmarks/{script} defines no PAGE")


def writers() -> dict[str, str]:
    """Generated block name -> the page its writer fills (with its default arguments)."""
    blocks = {
        "build_memory": benchmark_page("build_memory.py"),
        "encode_throughput": benchmark_page("encode_throughput.py"),
        Path(encode.RESULTS).stem: encode.PAGE,
        MWT.block: MWT.page,
        CONTINUAL.block: CONTINUAL.page,
    }
    for source in reproduce.DEFAULT_JSONS:
        blocks[Path(source).stem] = reproduce.PAGES[source]
    return blocks


def test_readme_is_an_overview_with_the_two_commands_and_every_command():
    text = README.read_text()
    assert len(text.splitlines()) <= 200, "README.md: at most 200 lines; move text to docs/"
    assert "```bash\nbash scripts/run_default.sh\nbash scripts/test.sh\n```" in text
    rows = re.findall(r"^\| `mia-inr ([a-z-]+)` \|", text, flags=re.M)
    assert rows == list(COMMANDS), "README's command table: one row per ray_jobs.cli command"
    for name in COMMANDS:
        assert f"## `mia-inr {name}`" in (DOCS / "commands.md").read_text()


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    assert len(listed) == len(set(listed)), "a page is listed twice in mkdocs.yml's nav"
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(listed) == pages, "mkdocs.yml's nav and the pages under docs/ differ"
    assert config["strict"] is True and config["docs_dir"] == "docs"


def test_results_index_links_every_results_page():
    index = (DOCS / "results" / "index.md").read_text()
    for page in sorted((DOCS / "results").glob("*.md")):
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/results/index.md: no link to {page.name}"


def test_every_generated_block_is_once_on_the_page_its_writer_writes():
    files = [README, *DOCS.rglob("*.md")]
    for name, page in writers().items():
        begin, end = markers(name)
        text = (ROOT / page).read_text()
        assert text.count(begin) == 1 and text.count(end) == 1, f"{page}: markers of {name}"
        assert text.index(begin) < text.index(end)
        elsewhere = [f for f in files if f != ROOT / page and begin in f.read_text()]
        assert not elsewhere, f"block {name} also in {elsewhere} (its writer fills {page})"


@pytest.fixture
def repo(tmp_path):
    """A repository with docs/, a figure outside it and one inside."""
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "fig.png").write_bytes(b"png")
    (tmp_path / "docs" / "inside.png").write_bytes(b"png")
    return tmp_path / "docs"


def test_hook_links_figures_outside_docs_to_their_copy_and_leaves_the_rest(repo):
    page = (
        "![a](../../benchmarks/results/fig.png)\n![b](../inside.png)\n"
        "![c](../../benchmarks/results/missing.png)\n![d](https://x.org/fig.png)\n"
        "[e](../../benchmarks/results/fig.png)\n"
    )
    found = mkdocs_hooks.images_of("results/x.md", page, repo)
    assert found == {"../../benchmarks/results/fig.png": "benchmarks/results/fig.png"}
    out = mkdocs_hooks.rewrite("results/x.md", page, repo).splitlines()
    assert out[0] == "![a](../repository/benchmarks/results/fig.png)"
    # inside docs/, missing (strict mode still fails on it), a URL, a plain link: unchanged
    assert out[1:] == page.splitlines()[1:]
    top = mkdocs_hooks.rewrite("x.md", "![a](../benchmarks/results/fig.png)", repo)
    assert top == "![a](repository/benchmarks/results/fig.png)"
