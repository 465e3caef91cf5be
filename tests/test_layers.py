"""The package layering: data flows render -> model -> training -> mining -> finetune, with common/ under
all and apps/ on top; no package imports one after it, only the Blender backend imports bpy, and library
code leaves process-wide state (global seeds, the matplotlib backend) alone."""
from __future__ import annotations

import ast

import pytest

from conftest import ROOT

ORDER = ["common", "render", "model", "training", "mining", "finetune", "apps"]
# model/ is the network and its weights: it reads no partitions and trains nothing.
NEVER = {"model": {"render"}}


def imported_modules(path) -> set[str]:
    """Absolute module names a file imports (relative imports are within its own package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def package_files():
    for package in ORDER:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path


def test_no_package_imports_one_after_it():
    problems = []
    for package, path in package_files():
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in ORDER and (ORDER.index(top) > ORDER.index(package) or top in NEVER.get(package, ())):
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert problems == []


def test_only_the_blender_backend_imports_bpy():
    users = sorted(str(path.relative_to(ROOT)) for _, path in package_files()
                   if any(m.split(".")[0] == "bpy" for m in imported_modules(path)))
    assert users == ["render/blender_backend.py"]


@pytest.mark.parametrize("needle", ["matplotlib.use(", "import matplotlib.pyplot", "from matplotlib import pyplot",
                                    "np.random.seed(", "random.seed(", "torch.manual_seed("])
def test_library_code_leaves_process_state_alone(needle):
    offenders = [str(path.relative_to(ROOT)) for _, path in package_files() if needle in path.read_text()]
    assert offenders == []
