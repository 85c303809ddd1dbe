"""The Colab probing notebook runs top to bottom on a checkpoint written by pretraining."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import nbclient
import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "probe_crema.ipynb"


def test_notebook_probes_a_pretrained_checkpoint(pretrained, tmp_path):
  config, workdir = pretrained
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  params = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1
  params[0].source += (f"\nCHECKPOINT = {str(workdir)!r}\nOUTPUT = {str(tmp_path)!r}"
                       "\nLABEL_FRACTIONS = (1.0,)\nBOOTSTRAP = 10")
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()
  outputs = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                    for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.outputs)
  assert "| crema_step2 | 100% |" in outputs and "| random_init | 100% |" in outputs
  images = sum("image/png" in o.get("data", {}) for cell in notebook.cells
               if cell.cell_type == "code" for o in cell.outputs)
  assert images == 4  # ROC curves, paired differences, reconstruction, embeddings.
  assert (tmp_path / "results.json").is_file()


# The setup and PTB-XL cells, without a checkpoint: run as the notebook runs them.

ROOT = NOTEBOOK.parents[1]


def _cell(tag: str) -> str:
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  cells = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
  assert len(cells) == 1
  return cells[0].source


def _run_cell(source: str, namespace: dict | None = None, **fields) -> dict:
  for name, value in fields.items():  # The cell's Colab form fields.
    source, count = re.subn(rf'^{name} = ".*?"', f"{name} = {value!r}", source,
                            flags=re.M)
    assert count == 1, name
  namespace = {} if namespace is None else namespace
  exec(compile(source, "<cell>", "exec"), namespace)  # pylint: disable=exec-used
  return namespace


@pytest.fixture
def sandbox(monkeypatch):
  """Restores the cwd and sys.path the setup cell changes; records pip calls."""
  monkeypatch.setattr(sys, "path", list(sys.path))
  monkeypatch.chdir(ROOT)
  calls = []
  real_run = subprocess.run

  def run(command, *args, **kwargs):
    calls.append(list(map(str, command)))
    return real_run(command, *args, **kwargs)

  monkeypatch.setattr(subprocess, "run", run)
  return calls


def test_setup_cell_uses_the_checkout_and_makes_no_pip_call_outside_colab(sandbox):
  assert "google.colab" not in sys.modules
  namespace = _run_cell(_cell("setup"))
  assert namespace["ROOT"] == ROOT and pathlib.Path.cwd() == ROOT
  assert not any("pip" in command for command in sandbox)
  assert not namespace["colab_setup"].install(ROOT, run=pytest.fail)


def test_setup_cell_without_repo_url_outside_a_checkout_says_what_to_fill_in(
    sandbox, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(RuntimeError, match="fill in REPO_URL"):
    _run_cell(_cell("setup"))
  assert not sandbox


def test_setup_cell_clones_repo_url_at_repo_ref(sandbox, tmp_path, monkeypatch):
  origin = tmp_path / "origin"
  (origin / "crema_jax").mkdir(parents=True)
  (origin / "notebooks").mkdir()
  shutil.copy(ROOT / "notebooks" / "colab_setup.py", origin / "notebooks")
  git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run(["git", "init", "-q", str(origin)], check=True)
  (origin / "crema_jax" / "version.txt").write_text("v1")
  subprocess.run(git + ["add", "-A"], check=True)
  subprocess.run(git + ["commit", "-qm", "v1"], check=True)
  subprocess.run(git + ["tag", "v1"], check=True)
  (origin / "crema_jax" / "version.txt").write_text("v2")
  subprocess.run(git + ["commit", "-qam", "v2"], check=True)
  workspace = tmp_path / "content"
  workspace.mkdir()
  monkeypatch.chdir(workspace)
  url = origin.as_uri()
  namespace = _run_cell(_cell("setup"), REPO_URL=url, REPO_REF="v1")
  clone = workspace / "crema-jax"
  assert namespace["ROOT"] == clone and pathlib.Path.cwd() == clone
  assert (clone / "crema_jax" / "version.txt").read_text() == "v1"
  # Run again (as after a restart, or in the clone): no second clone.
  for where in (workspace, clone):
    monkeypatch.chdir(where)
    assert _run_cell(_cell("setup"), REPO_URL=url, REPO_REF="v1")["ROOT"] == clone
  assert sum("clone" in command for command in sandbox) == 1
  assert not any("pip" in command for command in sandbox)


def _colab_setup():
  sys.path.insert(0, str(ROOT / "notebooks"))
  try:
    import colab_setup  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(str(ROOT / "notebooks"))
  return colab_setup


COLAB = {"numpy": "2.0.2", "pandas": "2.2.2", "protobuf": "5.29.5", "scipy": "1.16.1",
         "matplotlib": "3.10.0", "jax": "0.5.3", "jax-cuda12-plugin": "0.5.3"}


def test_colab_requirements_keep_the_preinstalled_packages():
  colab_setup = _colab_setup()
  pinned = colab_setup.read_requirements(ROOT / "requirements.txt")
  wanted, constraints = colab_setup.colab_requirements(pinned, COLAB.get)
  for name in ("numpy", "pandas", "protobuf", "scipy", "matplotlib", "scikit-learn"):
    assert name in wanted and not any(w.startswith(name + "=") for w in wanted)
  assert {"numpy==2.0.2", "pandas==2.2.2", "protobuf==5.29.5"} <= set(constraints)
  assert not {"pytest", "ipykernel", "nbclient", "nbformat"} & {
      colab_setup._name(w) for w in wanted}  # pylint: disable=protected-access
  jax = next(line for line in pinned if line.startswith("jax=="))
  assert jax.replace("jax", "jax[cuda12]", 1) in wanted  # Matches Colab's GPU plugin.
  assert "jaxlib==" + jax.split("==")[1] in wanted and "flax==0.12.8" in wanted
  wanted, _ = colab_setup.colab_requirements(pinned, {"numpy": "2.0.2"}.get)
  assert jax in wanted  # CPU runtime: plain jax.


@pytest.mark.parametrize("changed", [False, True])
def test_install_on_colab_restarts_only_when_an_imported_package_changed(
    tmp_path, monkeypatch, changed):
  colab_setup = _colab_setup()
  for name in ("requirements.txt", "pyproject.toml"):
    shutil.copy(ROOT / name, tmp_path)
  versions = dict(COLAB)
  monkeypatch.setattr(colab_setup, "installed_version", versions.get)
  monkeypatch.setattr(colab_setup, "imported_distributions",
                      lambda: {"numpy": versions["numpy"], "pandas": versions["pandas"]})
  commands, restarts = [], []

  def pip(command, check=False):
    del check
    commands.append(command)
    if changed and "-c" in command:
      versions["numpy"] = "2.4.6"
    return subprocess.CompletedProcess(command, 0)

  assert colab_setup.install(tmp_path, colab=True, run=pip, restart=restarts.append)
  first = commands[0]
  assert first[1:4] == ["-m", "pip", "install"] and "-c" in first
  constraints = pathlib.Path(first[first.index("-c") + 1])
  assert "numpy" in first and not any("numpy==" in arg or "pandas==" in arg
                                      for arg in first)
  assert commands[-1][-2:] == ["-e", str(tmp_path)]
  assert len(restarts) == changed and (not changed or "numpy" in restarts[0])
  assert not constraints.exists()  # A temporary file.
  # Run again (after the restart): installed, nothing to do.
  assert not colab_setup.install(tmp_path, colab=True, run=pytest.fail,
                                 restart=pytest.fail)


def test_ptbxl_cell_prepares_a_download_and_points_the_probe_at_it(tmp_path,
                                                                    monkeypatch):
  from crema_jax.data import storage  # pylint: disable=g-import-not-at-top
  from crema_jax.data import synthetic  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(sys, "path", [str(ROOT)] + sys.path)
  colab_setup = _colab_setup()
  source = _cell("ptbxl")
  assert "workers=os.cpu_count() or 1" in source
  assert "DATA_DIR" not in _run_cell(source, {"colab_setup": colab_setup, "os": os})
  # PhysioNet's zip unpacks into a folder of its own; PTBXL_DIR may name either.
  synthetic.write_synthetic_ptbxl(tmp_path / "download" / "ptb-xl-1.0.3", num_patients=6)
  namespace = _run_cell(source.replace("workers=os.cpu_count() or 1", "workers=1"),
                        {"colab_setup": colab_setup, "os": os},
                        PTBXL_DIR=str(tmp_path / "download"),
                        PREPARED_DIR=str(tmp_path / "prepared"))
  assert (namespace["DATA_DIR"], namespace["DATA_NAME"]) == (str(tmp_path / "prepared"),
                                                            "ptbxl")
  assert (storage.dataset_dir(namespace["DATA_DIR"], "ptbxl") / "manifest.json").is_file()
  with pytest.raises(FileNotFoundError, match="PTBXL_DIR"):
    colab_setup.prepare_ptbxl(tmp_path / "prepared", tmp_path / "elsewhere")
