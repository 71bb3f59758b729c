"""The README and docs/ link only to files inside the repository, and every one exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue  # (none today: the docs stand alone)
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT.resolve()), f"{page.name}: {target} leaves the repository"
        assert path.exists(), f"{page.name}: {target} does not exist"


def test_readme_states_exactly_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    setup = [b.strip() for b in blocks if b.strip().startswith("scripts/setup")]
    assert len(setup) == 2
    assert setup[1] == "scripts/setup && python3 -m pytest"
    assert (ROOT / ".ci" / "run").read_text().strip().endswith(setup[1])
