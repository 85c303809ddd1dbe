"""Every test runs on 8 CPU devices, so sharded paths are exercised without hardware.

`unit/` holds the fast tests that write no files; `integration/` the ones on real files,
prepared data and whole runs (their fixtures are in `integration/conftest.py`).
"""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
  """One persistent XLA cache for the session, in pytest's own temporary folder and
  inherited by the runs tests start as subprocesses: most of a few-step CPU run is
  compiling the same tiny model's step. (Set before any test module imports jax.)"""
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    cache = config._tmp_path_factory.mktemp("xla_cache", numbered=False)  # pylint: disable=protected-access
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  if "jax" in sys.modules:  # A conftest of the folder under test imported it first.
    jax_config = sys.modules["jax"].config
    jax_config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax_config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
