"""STYLE.md 3.1's dependency rule, checked by parsing imports: the kernels package imports
nothing from scratchvae outside itself (everything else may import the kernels)."""
import ast
from pathlib import Path

import scratchvae.kernels

KERNELS_DIR = Path(scratchvae.kernels.__file__).parent


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name


def test_kernels_import_nothing_from_the_rest_of_scratchvae():
    offending = []
    for path in sorted(KERNELS_DIR.glob("*.py")):
        for level, module in _imports(path):
            if level >= 2 or (level == 0 and module.startswith("scratchvae")
                              and not module.startswith("scratchvae.kernels")):
                offending.append(f"{path.name}: {'.' * level}{module}")
    assert not offending, offending
    assert len(list(KERNELS_DIR.glob("*.py"))) >= 7   # the files were found
