"""Checks packages against their checksums before they are trusted or shipped.

  python -m crema_jax.main --config configs/verify.py --workdir OUT \
      --config.checkpoint=PRETRAIN_WORKDIR_OR_CLASSIFIER_FOLDER

A pretraining workdir: every checkpoint step (or `checkpoint_step`); a classifier
folder: itself. Prints one line per package and writes OUT/verify.json; exits non-zero
naming each damaged, missing or unlisted file (`manifest.verify`).
"""

from __future__ import annotations

import pathlib

import ml_collections

from crema_jax import atomic
from crema_jax import checkpoint
from crema_jax.package import classifier
from crema_jax.package import encoder
from crema_jax.package import manifest


def packages(path: str | pathlib.Path, step: int = 0) -> list[pathlib.Path]:
  """The package folders under `path`: a classifier folder, or a pretraining workdir's
  checkpoint steps (only `step` when given)."""
  path = pathlib.Path(path)
  if classifier.is_classifier(path):
    return [path]
  if not encoder.is_checkpoint(path):
    raise FileNotFoundError(f"{path}: neither a pretraining workdir (with "
                            f"{checkpoint.CHECKPOINT_DIR}/) nor a classifier folder "
                            f"(with {classifier.SPEC_FILE})")
  steps = sorted((p for p in encoder.checkpoint_dir(path).iterdir()
                  if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
  if step:
    steps = [p for p in steps if int(p.name) == step]
  if not steps:
    raise FileNotFoundError(f"{encoder.checkpoint_dir(path)}: no checkpoint step "
                            f"{step or ''}".rstrip())
  return steps


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Verifies every package of `config.checkpoint`; SystemExit naming the damaged."""
  reports, problems = [], []
  for path in packages(config.checkpoint, config.get("checkpoint_step") or 0):
    try:
      report = manifest.verify(path)
    except manifest.PackageError as e:
      report = {"status": "damaged", "path": str(path), "problem": str(e)}
      problems.append(str(e))
    reports.append(report)
    print(f"{report['status']:>9}  {path}"
          + (f"  ({report['files']} files, sha256 {report['checksum'][:16]}...)"
             if report["status"] == "ok" else
             "  (written before packages were sealed: nothing to check)"
             if report["status"] == "unsealed" else ""))
  summary = {"checkpoint": str(config.checkpoint), "packages": reports,
             "ok": not problems}
  if workdir:
    atomic.write_json(pathlib.Path(workdir) / "verify.json", summary)
  if problems:
    raise SystemExit("\n".join(problems))
  return summary
