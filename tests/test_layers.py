"""The layers point one way: every import in the installed packages goes down or sideways
within its own package, never up.

    store, contracts     bottom: ClickHouse client and migrations; policy schema, OpenAI
                         shapes, agreement metrics, prices, states
    students             serving students (local server, generation, vLLM client)
    gateway | distiller  side by side: the request path | the loop; neither imports the other
    flywheel             top: the CLI and the demo, the composition root

Run as a script to print the count of uphill imports and each one:
`python tests/test_layers.py [ROOT]` (function-local imports included; TYPE_CHECKING
imports too, since they are still a dependency a reader follows).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# package -> rank; an import may only reach a package of strictly lower rank, or its own.
LAYERS: dict[str, int] = {
    "store": 0,
    "contracts": 0,
    "students": 1,
    "gateway": 2,
    "distiller": 2,
    "flywheel": 3,
}
INSTALLED = tuple(LAYERS)


def _package_of(module: str) -> str:
    return module.split(".")[0]


def uphill_imports(root: Path) -> list[str]:
    """`file:line: a imports b` for each import that does not point down."""
    out: list[str] = []
    for pkg in INSTALLED:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    target = _package_of(name)
                    if target not in LAYERS or target == pkg:
                        continue
                    if LAYERS[target] >= LAYERS[pkg]:
                        rel = path.relative_to(root)
                        out.append(f"{rel}:{node.lineno}: {pkg} imports {name}")
    return out


def test_no_import_runs_uphill() -> None:
    root = Path(__file__).resolve().parent.parent
    bad = uphill_imports(root)
    assert bad == [], "imports that run uphill:\n" + "\n".join(bad)


def test_no_installed_package_imports_tests() -> None:
    root = Path(__file__).resolve().parent.parent
    for pkg in INSTALLED:
        for path in (root / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "from tests" not in text and "import tests" not in text, path


def test_benchmarks_do_not_import_tests() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in (root / "load_tests").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests"):
                raise AssertionError(f"{path}:{node.lineno} imports {node.module}")


if __name__ == "__main__":
    found = uphill_imports(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(found))
    print(f"uphill imports: {len(found)}")
