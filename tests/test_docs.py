"""The docs hold together: the site builds strictly, the README stays short and its links lead
somewhere, and every page of docs/ is in mkdocs.yml's nav."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200
# [text](target): a Markdown link, or an image's; the target ends at the first space or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _nav_pages(nav: object) -> set[str]:
    """Every page a MkDocs nav names, however deeply nested."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, list):
        return set().union(*(_nav_pages(item) for item in nav))
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(value) for value in nav.values()))
    return set()


def _anchors(markdown_file: Path) -> set[str]:
    """The anchors MkDocs (and GitHub, for these headings) gives a Markdown file's headings."""
    text = FENCE.sub("", markdown_file.read_text(encoding="utf-8"))
    return {slugify(heading.replace("`", ""), "-") for heading in HEADING.findall(text)}


def _relative_links(markdown_file: Path) -> list[str]:
    """The targets of a Markdown file's links that point into the repository."""
    text = FENCE.sub("", markdown_file.read_text(encoding="utf-8"))
    return [target for target in LINK.findall(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")]


def test_site_builds_strictly(tmp_path):
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stdout}{built.stderr}"
    assert (tmp_path / "index.html").is_file()


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_README_LINES, (f"README.md has {lines} lines, {MAX_README_LINES} or more: "
                                      "move the detail to docs/")


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    missing = sorted(pages - _nav_pages(config.get("nav")))
    assert not missing, f"docs pages missing from mkdocs.yml's nav: {', '.join(missing)}"


def test_readme_links_lead_somewhere():
    broken = []
    for target in _relative_links(README):
        path, _, anchor = target.partition("#")
        file = ROOT / path
        if not file.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {path}")
    assert not broken, "README.md links that lead nowhere:\n" + "\n".join(broken)
