"""The README and docs/ point at what exists: every relative link resolves (its anchor to a heading
of the file it names), every file path of the repository they name is there, and every test that
docs/tests.md names is defined."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# a path in the repository: from a top-level folder, or from inside the package (design.md's `rnn/...`)
PATH = re.compile(
    r"(?<![\w./~-])((?:\.ci|benchmarks|configs|docs|tests|torch_charrnn|reference_numpy|rnn|cli|training|inference|data|csrc|cells)/[\w./-]*[\w/])"
)
README_MAX_LINES = 320


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def test_slugs_are_githubs():
    assert (
        slug("Three ways to differentiate a window (`--model.bptt`)")
        == "three-ways-to-differentiate-a-window---modelbptt"
    )
    assert slug("Quality at a fixed budget") == "quality-at-a-fixed-budget"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    links = LINK.findall(doc.read_text())
    assert links or doc.name != "README.md"
    for target in links:
        if re.match(r"[a-z]+:", target):  # https:, mailto: (no network here)
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"{doc.name} links to {target}: no such heading in {path.name}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_file_path_named_exists(doc):
    named = {p.rstrip(".") for p in PATH.findall(doc.read_text()) if not re.search(r"[<>*{}]", p)}
    assert named or doc.name not in ("README.md", "design.md")
    roots = (ROOT, ROOT / "torch_charrnn", ROOT / "torch_charrnn" / "rnn")
    missing = sorted(p for p in named if not any((root / p).exists() for root in roots))
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_the_readme_is_short_enough_to_read():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; measurements belong in docs/benchmarks.md"
    )


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_a_configs_header_says_what_it_trains_and_how_in_at_most_six_lines(config):
    lines = config.read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert 2 <= len(header) <= 6, f"{config.name}: a header of {len(header)} lines"
    assert f"#   charrnn fit --config configs/{config.name}" in header
    assert not [line for line in header if "README" in line], "figures are measured in docs/benchmarks.md"
    for path in PATH.findall("\n".join(header)):
        assert (ROOT / path).exists(), f"{config.name} names {path}"


def test_every_test_docs_tests_md_names_exists():
    """Each claim of docs/tests.md is held by the tests it names: a test that is renamed, merged or
    deleted must take its claim with it."""
    text = (ROOT / "docs" / "tests.md").read_text()
    defined = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    names = set(re.findall(r"`(test_[\w*]+)`", text))
    files = set(re.findall(r"`(tests/test_\w+\.py)`", text))
    assert names and files
    pattern = {n: "def " + n.replace("*", r"\w*") + r"\(" for n in names}  # `test_clip_grad_*`: a family
    missing = [n for n in names if not re.search(pattern[n], defined)]
    missing += [f for f in files if not (ROOT / f).is_file()]
    assert not missing, f"docs/tests.md names tests that do not exist: {sorted(missing)}"
