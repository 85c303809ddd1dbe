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
def demo_config(tmp_path_factory):
  """The test demo config over a small synthetic PTB-XL folder, already prepared."""
  from configs import demo as demo_configs  # pylint: disable=g-import-not-at-top
  from crema_jax import demo  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("demo")
  config = demo_configs.get_config("test")
  config.data.raw_dir = str(root / "ptbxl")
  config.data.data_dir = str(root / "prepared")
  demo.write_demo_data(config)
  return config


@pytest.fixture(scope="session")
def pretrained(demo_config, tmp_path_factory):
  """(config, workdir) of a 2-step pretraining run on the demo data, with checkpoints."""
  from crema_jax import train  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp("pretrained")
  config = demo_config.copy_and_resolve_references()
  config.total_steps = 2
  train.pretrain(config, workdir)
  return config, workdir
