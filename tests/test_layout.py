"""The package's rooms and the one direction of their imports: the command line uses the Lightning
glue, the glue uses the math and the data, the math and the data use neither (nor Lightning)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torch_charrnn"
# what each room may import of the package, besides itself and errors.py
ALLOWED = {"rnn": set(), "data": set(), "training": {"rnn", "data"}, "cli": {"rnn", "data", "training"}}
NO_LIGHTNING = (
    "rnn",
    "data/corpus.py",
    "data/encoded.py",
    "training/sampling.py",
    "training/legacy.py",
    "training/memory.py",
)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("room", ALLOWED)
def test_each_room_imports_only_the_rooms_below_it(room):
    for path in (PACKAGE / room).rglob("*.py"):
        for name in imports(path):
            parts = name.split(".")
            if parts[0] != "torch_charrnn" or len(parts) < 2 or parts[1] in (room, "errors"):
                continue
            assert parts[1] in ALLOWED[room], f"{path.relative_to(PACKAGE)} imports {name}"


@pytest.mark.parametrize("place", NO_LIGHTNING)
def test_the_math_the_text_and_sampling_import_no_lightning(place):
    paths = [PACKAGE / place] if place.endswith(".py") else list((PACKAGE / place).rglob("*.py"))
    assert paths
    for path in paths:
        assert not {n for n in imports(path) if n.split(".")[0] in ("lightning", "torchmetrics")}, path
