"""Every test runs on 8 CPU devices, so sharded paths are exercised without hardware."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the session, inherited by the runs tests start as
# subprocesses: most of a few-step CPU run is compiling the same tiny model's step.
_XLA_CACHE = tempfile.mkdtemp(prefix="crema_test_xla_cache_")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
  from configs import demo  # pylint: disable=g-import-not-at-top
  from crema_jax.data import prepare  # pylint: disable=g-import-not-at-top
  from crema_jax.data import synthetic  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("demo")
  config = demo.get_config("test")
  config.data.raw_dir = str(root / "ptbxl")
  config.data.data_dir = str(root / "prepared")
  synthetic.write_synthetic_ptbxl(config.data.raw_dir, num_patients=config.demo_patients,
                                  seed=0)
  prepare.prepare_from_config(config.data, show_progress=False)
  return config


@pytest.fixture(scope="session")
def pretrained(demo_config, tmp_path_factory):
  """(config, workdir) of a 2-step pretraining run on the demo data, with checkpoints."""
  from crema_jax import train  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp("pretrained")
  config = demo_config.copy_and_resolve_references()
  config.total_steps = 2
  train.train_and_evaluate(config, workdir)
  return config, workdir
