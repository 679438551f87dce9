"""The documentation holds together: the README fits on a few screens and links every page of
docs/, and every relative link in the README, docs/ and the model cards resolves to a file
(and, with ``#anchor``, to a heading of that file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["api.md", "deployment.md", "runtimes.md", "training.md", "benchmarks.md"]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "models").glob("*/*/README.md")),
]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not a link
    links = [a or b for a, b in LINK.findall(text)]
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_readme_fits_on_a_few_screens_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in DOCS:
        assert (ROOT / "docs" / page).is_file(), page
        assert f"](docs/{page})" in readme, page
    assert len(relative_links(ROOT / "README.md")) >= 10  # the checker below sees them


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link}"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: {link}"
            assert anchor in anchors(target), f"{page.name}: {link} (no such heading)"


def test_the_link_checker_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](page.md#title) [gone](nowhere.md) ![fig](fig.png)\n"
        "```\n[not a link](in-code.md)\n```\n"
    )
    assert relative_links(page) == ["page.md#title", "nowhere.md", "fig.png"]
    assert "title" in anchors(page)
