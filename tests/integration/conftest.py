"""Fixtures of the integration tests: the real reference files, a prepared synthetic
PTB-XL folder, and a short pretraining run with checkpoints."""

import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real reference files in ../shared/data (PTB-XL tables, MIT-BIH record 100)."""
  if not SHARED_DATA.is_dir():
    raise FileNotFoundError(f"reference data not found at {SHARED_DATA}: "
                            "clone the repository with ../shared beside it")
  return SHARED_DATA


@pytest.fixture(scope="session")
def demo_config(build_once):
  """The test demo config over a small synthetic PTB-XL folder, already prepared
  (once for the run: the xdist workers share the folder; tests only read it)."""
  from configs import demo as demo_configs  # pylint: disable=g-import-not-at-top
  from crema_jax import demo  # pylint: disable=g-import-not-at-top

  def configure(root):
    config = demo_configs.get_config("test")
    config.data.raw_dir = str(root / "ptbxl")
    config.data.data_dir = str(root / "prepared")
    return config

  return configure(build_once("demo", lambda root: demo.write_demo_data(configure(root))))


@pytest.fixture(scope="session")
def pretrained(demo_config, build_once):
  """(config, workdir) of a 2-step pretraining run on the demo data, with checkpoints
  (once for the run: the xdist workers share the folder; tests only read it)."""
  from crema_jax import train  # pylint: disable=g-import-not-at-top

  config = demo_config.copy_and_resolve_references()
  config.total_steps = 2
  workdir = build_once("pretrained", lambda workdir: train.pretrain(config, workdir))
  return config, workdir
