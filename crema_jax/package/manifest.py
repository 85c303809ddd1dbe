"""The checksum manifest of a package folder: `package.json` lists the sha256 of every
other file in the folder (recursively), so a copied, downloaded or damaged package can
be checked before it is used, and the damaged file named.

  {"format": 1, "kind": "pretraining_checkpoint" | "classifier", ...,
   "files": {"relative/path": "sha256 hex", ...}}

Links are never followed or listed as files: a package holds regular files only, so a
package cannot point at (and copy, or checksum) a file outside itself.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

from crema_jax import atomic

MANIFEST = "package.json"
FORMAT = 1
CHUNK = 1 << 20


class PackageError(ValueError):
  """A package that cannot be used as it is: missing, damaged or of another format.
  The message names the folder and the file."""


def sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def files(directory: pathlib.Path) -> dict[str, pathlib.Path]:
  """{posix relative path: path} of the regular files under `directory` (the manifest
  and a killed writer's partial files left out); PackageError on a link."""
  out = {}
  for path in sorted(directory.rglob("*")):
    relative = path.relative_to(directory).as_posix()
    if path.is_symlink():
      raise PackageError(f"{directory}: {relative} is a link; a package holds regular "
                         "files only")
    if path.is_file() and relative != MANIFEST and not path.name.endswith(
        atomic.PARTIAL):
      out[relative] = path
  return out


def write(directory: str | pathlib.Path, kind: str, **fields) -> dict:
  """Checksums every file of `directory` into its `package.json` (with `kind` and
  `fields`); returns the manifest."""
  directory = pathlib.Path(directory)
  manifest = {"format": FORMAT, "kind": kind, **fields,
              "files": {name: sha256(path) for name, path in files(directory).items()}}
  atomic.write_json(directory / MANIFEST, manifest)
  return manifest


def read_json(path: pathlib.Path):
  """A package's JSON file, or PackageError naming it."""
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise PackageError(f"{path}: unreadable ({e})") from e


def read(directory: str | pathlib.Path) -> dict | None:
  """The manifest of `directory`, or None when it has none (an older package)."""
  path = pathlib.Path(directory) / MANIFEST
  if not path.is_file():
    return None
  manifest = read_json(path)
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise PackageError(f"{path}: not a CREMA-JAX package manifest of format {FORMAT}")
  return manifest


def checksum(manifest: dict) -> str:
  """One sha256 for the whole package: of its sorted file checksums."""
  text = json.dumps(sorted(manifest["files"].items()))
  return hashlib.sha256(text.encode()).hexdigest()


def verify(directory: str | pathlib.Path) -> dict:
  """Checks every file of `directory` against its manifest: PackageError naming each
  damaged, missing or unlisted file; returns {"status": "ok" | "unsealed", "files",
  "checksum"} ("unsealed": an older package without a manifest, nothing to check)."""
  directory = pathlib.Path(directory)
  manifest = read(directory)
  if manifest is None:
    return {"status": "unsealed", "path": str(directory), "files": 0, "checksum": None}
  present = files(directory)
  problems = []
  for name, digest in manifest["files"].items():
    if name not in present:
      problems.append(f"{name}: missing")
    elif sha256(present[name]) != digest:
      problems.append(f"{name}: damaged (sha256 differs from {MANIFEST})")
  problems += [f"{name}: not in {MANIFEST} (added after the package was sealed)"
               for name in present if name not in manifest["files"]]
  if problems:
    raise PackageError(f"{directory}: the package does not match its {MANIFEST}:\n  "
                       + "\n  ".join(problems)
                       + "\nCopy it again from its source; do not use it as it is.")
  return {"status": "ok", "path": str(directory), "files": len(present),
          "checksum": checksum(manifest)}
