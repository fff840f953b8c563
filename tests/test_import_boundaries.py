"""api ⟂ validator ⟂ miner: the three processes share only ``shared/`` (docs/internals.md).

Read from the source (every ``import`` and ``from … import``, at any depth, lazy ones included), so a
forbidden import fails here even on a code path no other test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "validator", "miner")


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each module of ``package``: the top-level packages it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_process_imports_no_other_process(package):
    others = set(PACKAGES) - {package}
    crossings = {module: sorted(names & others) for module, names in imported_packages(package).items()
                 if names & others}
    assert crossings == {}, f"{package}/ imports another process's package: {crossings}"
