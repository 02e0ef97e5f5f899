"""The package's dependency rule, checked by parsing every module's imports with ast.

From the top down: the command line -> training and evaluation -> the models -> layers,
distributions, losses and optimizers -> the kernels. A module imports only from its own layer or
the layers below it; data, io and viz sit on the side (anyone may use them, and they use only
the helpers). The kernels package imports nothing from scratchvae outside itself.
"""
import ast
from pathlib import Path

import scratchvae
import scratchvae.kernels

PACKAGE_DIR = Path(scratchvae.__file__).parent
KERNELS_DIR = Path(scratchvae.kernels.__file__).parent

# module -> layer (higher imports lower); "side" modules are importable from every layer
LAYERS = {
    "kernels": 0,
    "_checks": 1, "activations": 1, "schedules": 1,
    "layers": 2, "distributions": 2, "losses": 2, "optim": 2, "quantize": 2, "code_prior": 2,
    "_base": 3, "model": 3, "cvae": 3, "hvae": 3, "vqvae": 3, "flows": 3,
    "train": 4, "evaluate": 4, "gradcheck": 4, "estimators": 4, "applications": 4,
    "latent": 4, "quality": 4, "metrics": 4, "holes": 4,
    "cli": 5, "sweep": 5, "__main__": 5, "__init__": 5,
}
SIDE = {"data", "io", "viz"}
SIDE_MAY_IMPORT = {"_checks", "kernels"} | SIDE
# the one upward import, at call time: VAE.log_likelihood is evaluate.iw_log_likelihood (the one
# definition of the chunked importance-weighted estimator)
UPWARD = {("model", "evaluate")}


def _imports(path):
    yield from _imports_of(path.read_text())


def _imports_of(source):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.module is None:                 # from . import io, viz
                for alias in node.names:
                    yield node.level, alias.name
            else:
                yield node.level, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name


def _scratchvae_targets(path):
    yield from _targets_of(path.read_text())


def _targets_of(source):
    """The top-level scratchvae modules a package module imports (first name after the dot)."""
    for level, module in _imports_of(source):
        if level == 1:
            name = module.split(".")[0]
        elif level == 0 and (module == "scratchvae" or module.startswith("scratchvae.")):
            name = module.split(".")[1] if "." in module else "__init__"
        else:
            continue
        yield name


def test_kernels_import_nothing_from_the_rest_of_scratchvae():
    offending = []
    for path in sorted(KERNELS_DIR.glob("*.py")):
        for level, module in _imports(path):
            if level >= 2 or (level == 0 and module.startswith("scratchvae")
                              and not module.startswith("scratchvae.kernels")):
                offending.append(f"{path.name}: {'.' * level}{module}")
    assert not offending, offending
    assert len(list(KERNELS_DIR.glob("*.py"))) >= 7   # the files were found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE_DIR.glob("*.py")}
    unplaced = sorted(modules - set(LAYERS) - SIDE)
    assert not unplaced, f"place these modules in LAYERS or SIDE: {unplaced}"
    assert {"model", "layers", "train", "cli"} <= modules   # the files were found


def test_no_module_imports_a_layer_above_its_own():
    offending = []
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        name = path.stem
        for target in _scratchvae_targets(path):
            if target == name or target in SIDE and name not in SIDE or (name, target) in UPWARD:
                continue
            if name in SIDE:
                if target not in SIDE_MAY_IMPORT:
                    offending.append(f"{name} (side) imports {target}")
            elif target not in LAYERS or LAYERS[target] > LAYERS[name]:
                offending.append(f"{name} (layer {LAYERS[name]}) imports {target} "
                                 f"(layer {LAYERS.get(target, '?')})")
    assert not offending, offending


def test_the_parser_sees_every_form_of_import():
    """Relative, bare-package and absolute imports are all found (so the check above can fail)."""
    src = ("from .model import VAE\nfrom . import cli\nimport scratchvae.train\n"
           "from scratchvae.kernels.workspace import Workspace\nimport numpy\nfrom ..x import y\n")
    assert list(_targets_of(src)) == ["model", "cli", "train", "kernels"]


def test_the_upward_imports_happen_at_call_time_only():
    """An allowed upward import sits inside a function, never at module level (importing the
    lower module must not import the upper one)."""
    for name, target in UPWARD:
        tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        at_import = {t for n in top for t in _targets_of(ast.unparse(n))}
        assert target not in at_import, f"{name} imports {target} at module level"
        inner = {t for t in _targets_of(ast.unparse(tree))}
        assert target in inner, f"{name} no longer imports {target}: drop it from UPWARD"
