"""Every test runs on 8 CPU devices, so sharded paths are exercised without hardware.

`unit/` holds the fast tests that write no files; `integration/` the ones on real files,
prepared data and whole runs (their fixtures are in `integration/conftest.py`).

`tests/run.sh` runs the suite on 2 pytest-xdist workers (`-n 2 --dist loadgroup`); a plain
`pytest tests/...` runs it in one process. Under xdist each worker is its own pytest
session, so a session fixture would be built once per worker and a module fixture once
per worker that runs a test of the module. Hence: a module's tests that share a module
fixture are kept on one worker, the slowest tests are sent first
(`pytest_collection_modifyitems`), and the costly session fixtures build their folder once
for the whole run (`build_once`).
"""

import fcntl
import os
import pathlib
import shutil
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


def _run_tmp(config) -> pathlib.Path:
  """pytest's temporary folder of this run, the same for every xdist worker: a worker's
  own basetemp is a subfolder (popen-gwN) of the controller's."""
  base = config._tmp_path_factory.getbasetemp()  # pylint: disable=protected-access
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
  """One persistent XLA cache for the run, in pytest's own temporary folder and
  inherited by the runs tests start as subprocesses: most of a few-step CPU run is
  compiling the same tiny model's step. Under xdist the workers share it (it is in the
  run's folder, not a worker's), so a program one worker compiled the other reads back.
  (Set before any test module imports jax.)"""
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    cache = _run_tmp(config) / "xla_cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  if "jax" in sys.modules:  # A conftest of the folder under test imported it first.
    jax_config = sys.modules["jax"].config
    jax_config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax_config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@pytest.fixture(scope="session")
def build_once(request, tmp_path_factory):
  """build_once(name, build) -> the folder `build(folder)` filled, once for the run.

  In one process: a new temporary folder. Under xdist: a folder of the run, shared by
  the workers; the first worker to ask builds it while holding a lock, the others wait
  for it and then read what it built (which is why the folder must not be written to
  afterwards). A build that failed is started again by the next worker that asks."""
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    def build_here(name, build):
      folder = tmp_path_factory.mktemp(name)
      build(folder)
      return folder
    return build_here

  root = _run_tmp(request.config) / "built_once"
  root.mkdir(exist_ok=True)

  def build_shared(name, build):
    folder, built = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file is closed.
      if not built.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        build(folder)
        built.touch()
    return folder
  return build_shared


_SHARED_SCOPES = ("class", "module", "package")

# Sent to the workers first, in this order, so that they do not end the run on one
# worker while the other is idle: the tests or modules that take minutes on 2 CPU cores.
# (Only the order of a run under xdist; a name that no longer matches is left in place.)
_SLOWEST = (
    "tests/integration/test_demo.py::test_a_pretrained_demo_checkpoint_beats_random_init",
    "tests/integration/test_tpu_aot.py::",
    "tests/integration/test_multihost.py::",
)


def _slowest_first(item) -> int:
  return next((i for i, prefix in enumerate(_SLOWEST) if item.nodeid.startswith(prefix)),
              len(_SLOWEST))


@pytest.hookimpl(tryfirst=True)  # Before xdist's own hook reads the xdist_group marks.
def pytest_collection_modifyitems(config, items):
  """With `--dist loadgroup`, the tests of one module that use a fixture of class,
  module or package scope (a prepared folder, a training run, a multi-process job) go
  to one worker, so the fixture is built once, as in one process; every other test is
  sent on its own to whichever worker is free. Tests with an xdist_group mark of their
  own keep it. The slowest are moved to the front (run.sh keeps this order:
  --no-loadscope-reorder)."""
  if not config.getoption("loadgroup", False):  # Set on an xdist worker of that mode.
    return
  items.sort(key=_slowest_first)  # Stable: otherwise the collection's order.
  for item in items:
    if item.get_closest_marker("xdist_group") is not None:
      continue
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
      continue
    if any(defs and defs[-1].scope in _SHARED_SCOPES
           for name, defs in info.name2fixturedefs.items()
           if name in item.fixturenames):
      item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
