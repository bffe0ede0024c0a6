"""The package's rooms and the one direction of their imports: the command line uses training (the
Lightning glue) and inference, training uses inference, the math and the data, inference uses the
math and the data, and the math and the data use neither. The math, the text and inference (what
``sample``, ``score`` and ``export`` share) never import Lightning. Each module's name says its room
once; the NumPy reference is imported by the gradient oracle alone; Lightning's private names are
used in two places only, each tested here."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torch_charrnn"
# what each room may import of the package, besides itself and errors.py
# (errors.py, a top-level module, by every room; oracle.py, the other, by the command line alone)
ALLOWED = {
    "rnn": set(),
    "data": set(),
    "inference": {"rnn", "data"},
    "training": {"rnn", "data", "inference"},
    "cli": {"rnn", "data", "inference", "training", "oracle"},
}
NO_LIGHTNING = ("rnn", "inference", "data/corpus.py", "data/encoded.py", "oracle.py")


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
def test_the_math_the_text_and_inference_import_no_lightning(place):
    paths = [PACKAGE / place] if place.endswith(".py") else list((PACKAGE / place).rglob("*.py"))
    assert paths
    for path in paths:
        assert not {n for n in imports(path) if n.split(".")[0] in ("lightning", "torchmetrics")}, path


def test_no_two_modules_of_the_package_share_a_name():
    names = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            names.setdefault(path.stem, []).append(str(path.relative_to(PACKAGE)))
    assert not {name: paths for name, paths in names.items() if len(paths) > 1}


def test_only_the_gradient_oracle_imports_the_numpy_reference():
    importers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] == "reference_numpy" for name in imports(path))
    }
    assert importers == {"oracle.py"}


def test_the_two_private_lightning_names_the_package_uses_still_work_as_it_assumes():
    """cli/fit.py's _parse_ckpt_path and cli/versions.py's logger._version (tested with Lightning
    2.6): should Lightning rename or move either, the package would silently stop using it."""
    import inspect

    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import TensorBoardLogger

    from torch_charrnn.cli.fit import CharRNNCLI

    init = inspect.getsource(LightningCLI.__init__)
    parsed, read = init.find("self.parse_arguments("), init.find("self._parse_ckpt_path()")
    assert 0 <= parsed < read < init.find("self.instantiate_classes()")
    assert CharRNNCLI._parse_ckpt_path is not LightningCLI._parse_ckpt_path
    assert not inspect.signature(LightningCLI._parse_ckpt_path).parameters.keys() - {"self"}

    assert TensorBoardLogger("root")._version is None
    assert TensorBoardLogger("root", version=3)._version == 3
    logger = TensorBoardLogger("root")
    logger._version = 7  # as claim_version sets it, before anything has asked for the version
    assert logger.version == 7 and logger.log_dir.endswith("version_7")
