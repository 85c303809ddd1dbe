"""The probing notebook's setup on Colab: the project's packages installed next to the
runtime's preinstalled ones, and a downloaded PTB-XL folder prepared for the probe.

Outside Colab (`"google.colab" not in sys.modules`) `install` does nothing: the
repository's `.venv` (launch/setup_env.sh) already holds the pinned stack.

On Colab, `requirements.txt`'s pins of the packages Colab preinstalls and imports at
start-up (numpy, pandas, protobuf, matplotlib, scipy, ...) are relaxed to "whatever is
installed", held there by a constraints file, so pip does not swap a module that the
running kernel has already loaded; the test-only tools (pytest, nbclient, nbformat,
ipykernel) are left out, Colab has its own kernel. If pip cannot satisfy the pinned JAX
stack with Colab's versions it installs without the constraints, and when that changed
a distribution whose modules were already imported the runtime has to restart: `install`
says so and ends the kernel (Colab starts a fresh one; run the setup cell again).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from typing import Callable, Iterable

# Preinstalled on Colab and used by the project through long-stable APIs: keep Colab's.
RELAXED = frozenset({
    "numpy", "scipy", "pandas", "protobuf", "matplotlib", "scikit-learn", "h5py",
    "tqdm", "absl-py",
})
# For the tests and local Jupyter only; Colab brings its own kernel.
LEFT_OUT = frozenset({"pytest", "nbclient", "nbformat", "ipykernel"})
STAMP = ".colab_installed"

RESTART_MESSAGE = ("Installing the project changed {names}, which this runtime had already "
                   "imported. Restarting the runtime now (Colab requires it): when it has "
                   "reconnected, run this cell again; it will not need to restart twice.")


def in_colab() -> bool:
  return "google.colab" in sys.modules


def _name(requirement: str) -> str:
  """The canonical distribution name of a requirement line ("Jax[cuda12]==1" -> "jax")."""
  return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement.strip(), 1)[0]).lower()


def read_requirements(path: str | pathlib.Path) -> list[str]:
  lines = []
  for line in pathlib.Path(path).read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
      lines.append(line)
  return lines


def installed_version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def colab_requirements(requirements: Iterable[str],
                       version: Callable[[str], str | None] | None = None
                       ) -> tuple[list[str], list[str]]:
  """(requirements, constraints) for pip on Colab.

  Pins in RELAXED become bare names, and each one installed is constrained to its
  installed version; LEFT_OUT is dropped; jax is asked for with the accelerator
  plugin the runtime has (GPU: jax[cuda12], TPU: jax[tpu]) so the two stay matched."""
  version = version or installed_version
  extra = ("cuda12" if version("jax-cuda12-plugin") else
           "tpu" if version("libtpu") or version("libtpu-nightly") else "")
  wanted, constraints = [], []
  for requirement in requirements:
    name = _name(requirement)
    if name in LEFT_OUT:
      continue
    if name in RELAXED:
      wanted.append(name)
      if (current := version(name)) is not None:
        constraints.append(f"{name}=={current}")
    elif name == "jax" and extra:
      wanted.append(requirement.replace("jax", f"jax[{extra}]", 1))
    else:
      wanted.append(requirement)
  return wanted, constraints


def imported_distributions() -> dict[str, str]:
  """{distribution: version} of every installed distribution with a module imported."""
  modules = {name.split(".", 1)[0] for name in list(sys.modules)}
  owners = importlib.metadata.packages_distributions()
  names = {dist for module in modules for dist in owners.get(module, ())}
  return {name: v for name in sorted(names) if (v := installed_version(name)) is not None}


def _stamp(root: pathlib.Path) -> str:
  digest = hashlib.sha256()
  for name in ("requirements.txt", "pyproject.toml"):
    digest.update((root / name).read_bytes())
  return digest.hexdigest()


def _restart(message: str) -> None:
  print(message, flush=True)
  os.kill(os.getpid(), 9)


def install(root: str | pathlib.Path, *, colab: bool | None = None,
            run: Callable[..., subprocess.CompletedProcess] | None = None,
            restart: Callable[[str], None] | None = None) -> bool:
  """Installs the checkout at `root` and its requirements on Colab; returns whether pip
  ran. Outside Colab it does nothing. Ends the kernel (via `restart`) when pip changed a
  distribution that was already imported."""
  root = pathlib.Path(root)
  run, restart = run or subprocess.run, restart or _restart
  if not (in_colab() if colab is None else colab):
    return False
  stamp = root / STAMP
  want = _stamp(root)
  if stamp.is_file() and stamp.read_text().strip() == want:
    print("The project's packages are installed (delete", stamp, "to reinstall).")
    return False
  wanted, constraints = colab_requirements(read_requirements(root / "requirements.txt"))
  before = imported_distributions()
  pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
  with tempfile.TemporaryDirectory() as folder:
    constraints_file = pathlib.Path(folder) / "constraints.txt"
    constraints_file.write_text("\n".join(constraints) + "\n")
    result = run([*pip, *wanted, "-c", str(constraints_file)])
    if result.returncode != 0:
      print("The pinned JAX stack needs newer versions of some of Colab's packages "
            f"({', '.join(sorted(_name(c) for c in constraints))}); installing them.")
      run([*pip, *wanted], check=True)
  run([*pip, "--no-deps", "-e", str(root)], check=True)
  stamp.write_text(want + "\n")
  changed = sorted(name for name, v in before.items() if installed_version(name) != v)
  if changed:
    restart(RESTART_MESSAGE.format(names=", ".join(changed)))
  return True


def prepare_ptbxl(ptbxl_dir: str | pathlib.Path, data_dir: str | pathlib.Path,
                  name: str = "ptbxl", workers: int = 2,
                  show_progress: bool = True) -> tuple[str, str]:
  """Prepares a PTB-XL download (the folder holding ptbxl_database.csv, or the one
  its zip unpacked into) into
  `data_dir`/`name` (resumes a run that stopped); returns (data_dir, name), the probe
  config's `data.data_dir` and `data.name`."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from crema_jax.data import prepare  # pylint: disable=g-import-not-at-top

  ptbxl_dir = pathlib.Path(ptbxl_dir).expanduser()
  nested = sorted(ptbxl_dir.glob("*/ptbxl_database.csv"))  # PhysioNet's zip has one.
  if not (ptbxl_dir / "ptbxl_database.csv").is_file() and len(nested) == 1:
    ptbxl_dir = nested[0].parent
  if not (ptbxl_dir / "ptbxl_database.csv").is_file():
    raise FileNotFoundError(
        f"{ptbxl_dir} does not hold ptbxl_database.csv: set PTBXL_DIR to the folder of "
        "the PTB-XL download (https://physionet.org/content/ptb-xl/), the one with "
        "ptbxl_database.csv, scp_statements.csv and records500/")
  config = common.data_config()
  config.source = "ptbxl"
  config.raw_dir = str(ptbxl_dir)
  config.data_dir = str(pathlib.Path(data_dir).expanduser())
  config.name = name
  config.prepare_workers = workers
  manifest = prepare.prepare_from_config(config, show_progress=show_progress)
  print(prepare.summarize(manifest))
  return config.data_dir, config.name

