"""The layers of the package: what may import what."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "crema_jax"


def imported_modules(path: pathlib.Path) -> set[str]:
  """Every module a file imports (`import a.b`, `from a.b import c` -> a.b and a.b.c),
  at any depth of the file (lazy imports included)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out.update(f"{node.module}.{alias.name}" for alias in node.names)
  return out


@pytest.mark.parametrize("layer,forbidden", [
    ("evaluation", "crema_jax.inference"),
    ("inference", "crema_jax.evaluation"),
    ("package", "crema_jax.evaluation"),
    ("package", "crema_jax.inference"),
])
def test_evaluation_and_inference_meet_only_below_both(layer, forbidden):
  """evaluation/ and inference/ share what lies below them (package/, models, data)
  and never import each other; package/ imports neither."""
  offenders = {str(path.relative_to(ROOT)): sorted(
                   m for m in imported_modules(path) if m.startswith(forbidden))
               for path in sorted((ROOT / layer).rglob("*.py"))}
  assert not {k: v for k, v in offenders.items() if v}
