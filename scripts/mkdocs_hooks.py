"""MkDocs hooks (``mkdocs.yml``): publish the repository figures that docs pages show.

Generated result blocks link their figures where the studies write them, relative to the
page (``../benchmarks/results/mia_table1.png`` from ``docs/reproduction.md``), so the
pages read right on GitHub. Those files lie outside ``docs/``, where MkDocs neither copies
nor finds them (strict mode fails on the link). These hooks copy each such figure into the
site under ``repository/<its path>`` and point the page's image link there. Only images
that exist in the repository are handled: a missing figure, or a link to any other file
outside ``docs/``, is left to MkDocs and still fails a strict build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

# ![alt](target): the target without spaces or a title.
IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)(\))")
SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")
PREFIX = "repository"


def outside_image(page_uri: str, target: str, docs_dir: Path) -> str | None:
    """The repository path of an image ``target`` that a page links outside ``docs_dir``.

    Args:
        page_uri: the page's path inside ``docs_dir`` (``results/x.md``).
        target: the link target as written in the page.
        docs_dir: the site's source folder; its parent is the repository root.

    Returns:
        The figure's path relative to the repository root (``benchmarks/results/x.png``), or
        ``None`` when the target is a URL, inside ``docs_dir``, not an image or not a file.
    """
    if "://" in target or target.startswith(("/", "#")):
        return None
    if not target.lower().endswith(SUFFIXES):
        return None
    uri = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), target))
    if not uri.startswith("../"):
        return None
    root = docs_dir.resolve().parent
    path = (docs_dir / uri).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path.relative_to(root).as_posix()


def images_of(page_uri: str, markdown: str, docs_dir: Path) -> dict[str, str]:
    """Link target -> repository path of every image ``markdown`` links outside ``docs_dir``."""
    found = {}
    for match in IMAGE.finditer(markdown):
        repo_path = outside_image(page_uri, match.group(2), docs_dir)
        if repo_path is not None:
            found[match.group(2)] = repo_path
    return found


def rewrite(page_uri: str, markdown: str, docs_dir: Path) -> str:
    """``markdown`` with each image outside ``docs_dir`` linked to its copy in the site."""
    here = posixpath.dirname(page_uri) or "."

    def sub(match: re.Match[str]) -> str:
        repo_path = outside_image(page_uri, match.group(2), docs_dir)
        if repo_path is None:
            return match.group(0)
        copy = posixpath.relpath(f"{PREFIX}/{repo_path}", here)
        return f"{match.group(1)}{copy}{match.group(3)}"

    return IMAGE.sub(sub, markdown)


def on_files(files: Files, config: Any) -> Files:
    """Add the repository figures that pages link outside ``docs/`` to the site's files."""
    docs_dir = Path(config["docs_dir"])
    wanted: set[str] = set()
    for page in files.documentation_pages():
        wanted.update(images_of(page.src_uri, page.content_string, docs_dir).values())
    root = docs_dir.resolve().parent
    for repo_path in sorted(wanted):
        files.append(
            File.generated(config, f"{PREFIX}/{repo_path}", abs_src_path=str(root / repo_path))
        )
    return files


def on_page_markdown(markdown: str, page: Page, config: Any, files: Files) -> str:
    """Point the page's images outside ``docs/`` at their copies (added by :func:`on_files`)."""
    return rewrite(page.file.src_uri, markdown, Path(config["docs_dir"]))
