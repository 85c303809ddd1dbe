"""Which run a workdir's outputs belong to, and the checks an output passes before it is
written.

Every inference job records its run (`identity`: job, input folder, package and its
checksum, the settings that shape the outputs) in its summary JSON. A job refuses,
before any work, a workdir that holds the outputs of another run, naming what differs,
unless `overwrite`; the same run again replaces its own outputs (atomically: `atomic`).
"""

from __future__ import annotations

import json
import pathlib

import ml_collections
import numpy as np

from crema_jax import atomic

SUMMARIES = {"embed": "embed.json", "predict": "predict.json", "export": "export.json"}
# Config fields that change what a job writes (beyond its input and package).
SETTINGS = ("input_source", "input_leads", "lead_aliases", "derive_limb_leads",
            "long_seconds", "window_stride_seconds", "checkpoint_step", "platforms")


def identity(job: str, config: ml_collections.ConfigDict, origin: dict) -> dict:
  """The run a job's outputs belong to: job, input folder, package (path, checksum)
  and the settings (`SETTINGS`) of `config`."""
  settings = {k: config[k] for k in SETTINGS if k in config}
  settings = json.loads(json.dumps(settings))  # Tuples as lists, as read back.
  return {"job": job,
          "input": (str(pathlib.Path(config.input).absolute())
                    if config.get("input") else None),
          "package": str(origin["package"]), "checksum": origin["checksum"],
          "settings": settings}


def check_workdir(workdir: pathlib.Path, run: dict, overwrite: bool) -> None:
  """Finishes an interrupted commit in `workdir` (`atomic.recover`), then refuses it
  when it holds another run's outputs (unless `overwrite`), naming what differs."""
  if not workdir.is_dir():
    return
  atomic.recover(workdir)
  for job, name in SUMMARIES.items():
    path = workdir / name
    if not path.is_file() or overwrite:
      continue
    try:
      other = json.loads(path.read_text()).get("run")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
      other = None
    if other == run:
      continue
    if other is None:
      differs = [f"{name} records no run (written by an older version, or damaged)"]
    else:
      differs = [f"{key}: {other.get(key)!r} there, {run.get(key)!r} now"
                 for key in run if key != "settings" and other.get(key) != run.get(key)]
      theirs, ours = other.get("settings", {}), run["settings"]
      differs += [f"{key}: {theirs.get(key)!r} there, {ours.get(key)!r} now"
                  for key in sorted(set(theirs) | set(ours))
                  if theirs.get(key) != ours.get(key)]
    raise FileExistsError(
        f"{workdir} holds the outputs of another run ({name}):\n  "
        + "\n  ".join(differs)
        + "\nUse another --workdir, or --config.overwrite=True to replace them.")


def check_finite(name: str, values: np.ndarray, origin: dict) -> None:
  """Refuses non-finite features or probabilities: they come from damaged or
  diverged parameters, and `p >= threshold` would silently decide them negative."""
  bad = ~np.isfinite(values)
  if bad.any():
    rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
    raise FloatingPointError(
        f"{len(rows)} of {len(values)} ECGs got non-finite {name} from the encoder of "
        f"{origin['package']}: its parameters are damaged or diverged. Nothing was "
        "written. Check the package with `python -m crema_jax.main --config "
        "configs/verify.py --workdir /tmp/verify --config.checkpoint=...`")
