"""Every relative link of the project's markdown files points at a file that exists, and every
``#anchor`` at a heading of its target (GitHub's heading slugs), so restructuring a page cannot
leave a README or doc link dangling."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.scripts import ROOT

PAGES = sorted(
    p
    for p in ROOT.rglob("*.md")
    if not any(part.startswith(".") or part in {"runs", "node_modules"} for part in p.relative_to(ROOT).parts)
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than ``-`` and ``_`` dropped,
    spaces to ``-``."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '#' in a code block is no heading
    return {github_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def test_github_slug_matches_githubs_rule() -> None:
    assert github_slug("Not done, and what is out of reach here") == "not-done-and-what-is-out-of-reach-here"
    assert github_slug("Speed: stage passes, memory layout, compile, packing runs") == (
        "speed-stage-passes-memory-layout-compile-packing-runs"
    )
    assert github_slug("The `osgd` package (3 methods)") == "the-osgd-package-3-methods"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, hf-hub: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)} has broken links: {broken}"
