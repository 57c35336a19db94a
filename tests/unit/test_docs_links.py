"""The docs hold together: every relative link of README.md and docs/**/*.md names a file or directory that
exists, and every ``#anchor`` names a heading of the linked markdown file (GitHub's slugs), and the README stays
short (the rest lives in docs/, docs/README.md lists it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 220

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:https?:|mailto:)", re.I)


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks (fenced lines blanked, so line numbers stay)."""
    out, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return "\n".join(out)


def slug(text: str) -> str:
    """GitHub's heading slug (github-slugger): the rendered text lowercased, every character but letters, digits,
    underscores, hyphens and spaces removed, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings; a repeated slug gets -1, -2, ... as on GitHub."""
    occurrences: dict[str, int] = {}
    found = set()
    for line in prose(path.read_text(encoding="utf-8")).split("\n"):
        m = HEADING.match(line)
        if not m:
            continue
        original = result = slug(m.group(1))
        while result in occurrences:
            occurrences[original] += 1
            result = f"{original}-{occurrences[original]}"
        occurrences[result] = 0
        found.add(result)
    return found


def links(path: Path) -> list[tuple[int, str, str]]:
    """(line, text, target) of every markdown link (images too) outside code (fenced blocks, inline code spans)."""
    text = prose(path.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in LINK.finditer(text)]


def test_slug_is_githubs():
    assert slug("Differences from Gardener's extension") == "differences-from-gardeners-extension"
    assert slug("Nodes: the node agent") == "nodes-the-node-agent"
    assert slug("Deploying: image, manifests, kind, Gardener") == "deploying-image-manifests-kind-gardener"
    assert slug("`registry-cache credentials create | rotate`") == "registry-cache-credentials-create--rotate"
    assert slug("Short-lived credentials: a kubelet credential provider plugin per cache") == (
        "short-lived-credentials-a-kubelet-credential-provider-plugin-per-cache")


def test_repeated_headings_get_numbered(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A\n\n## Usage\n\n```\n# Usage\n```\n\n## Usage\n\n### Usage\n")
    assert anchors(page) == {"a", "usage", "usage-1", "usage-2"}


def test_links_outside_code_only(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n[d\ne](#f) ![img](pic.png) [g](https://h)\n")
    assert links(page) == [(1, "a", "x.md"), (5, "d\ne", "#f"), (6, "img", "pic.png"), (6, "g", "https://h")]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(path: Path):
    broken = []
    for line, text, target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}:{line}: [{' '.join(text.split())}]({target})"
        if not linked.exists():
            broken.append(f"{where}: no such file or directory")
            continue
        if anchor:
            if linked.is_dir() or linked.suffix != ".md":
                broken.append(f"{where}: an anchor into something that is not a markdown file")
            elif anchor not in anchors(linked):
                broken.append(f"{where}: no heading with the anchor #{anchor} in {linked.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_in_the_index():
    index = REPO / "docs" / "README.md"
    listed = {(index.parent / target.partition("#")[0]).resolve() for _, _, target in links(index)
              if not EXTERNAL.match(target)}
    pages = {p.resolve() for p in (REPO / "docs").rglob("*.md")} - {index.resolve()}
    assert not pages - listed, sorted(str(p.relative_to(REPO)) for p in pages - listed)


def test_the_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the rest belongs in docs/"
