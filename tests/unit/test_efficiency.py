"""benchmarks/efficiency.py on the smallest variant: every field there and sane.

  python -m pytest -q tests/unit/test_efficiency.py

No timing is asserted (only that times are positive).
"""

import json
import pathlib
import sys

import jax
import pytest

from crema_jax import models
from crema_jax.models import sizing

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
ROW_FIELDS = ("variant", "dtype", "platform", "params", "encoder_params", "tokens",
              "gflops_per_ecg", "latency_ms_p50", "latency_ms_p95", "throughput_batch",
              "throughput_batch_requested", "ecgs_per_second", "peak_mb",
              "peak_mb_requested", "peak_mb_batch1", "memory_bytes")


@pytest.fixture(scope="module")
def efficiency():
  sys.path.insert(0, str(BENCHMARKS))
  try:
    import efficiency  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    yield efficiency
  finally:
    sys.path.remove(str(BENCHMARKS))


def smallest_variant() -> str:
  return min(models.VARIANTS, key=lambda n: sizing.count_params(models.VARIANTS[n]))


def abstract_param_count(efficiency, variant: str) -> int:
  model = models.build(efficiency.make_config(variant, "float32"))
  return sizing.param_count(
      jax.eval_shape(lambda: models.init_params(model, jax.random.key(0))))


@pytest.fixture(scope="module")
def report(efficiency):
  return efficiency.run([smallest_variant()], throughput_batch=2, repeats=2,
                        latency_calls=2, torch_eager_twin=False)


def test_every_row_has_sane_fields(efficiency, report):
  variant = smallest_variant()
  rows = report["rows"]
  assert [(r["variant"], r["dtype"]) for r in rows if r["platform"] == "cpu"] == [
      (variant, d) for d in efficiency.DTYPES]
  params = abstract_param_count(efficiency, variant)
  for row in rows:
    assert all(k in row for k in ROW_FIELDS), sorted(set(ROW_FIELDS) - set(row))
    assert row["params"] == params
    assert 0 < row["encoder_params"] < params
    assert row["tokens"] == models.build(efficiency.make_config(variant, "float32")
                                         ).num_tokens
    assert row["gflops_per_ecg"] > 0
    assert 0 < row["latency_ms_p50"] <= row["latency_ms_p95"]
    assert row["throughput_batch"] == row["throughput_batch_requested"] == 2
    assert row["ecgs_per_second"] > 0
    mem = row["memory_bytes"]
    assert mem["peak"] == mem["argument"] + mem["output"] + mem["temp"] > 0
    assert row["peak_mb"] > 0 and row["peak_mb_batch1"] > 0
  assert report["settings"]["throughput_batch"] == 2
  assert "torch_eager_twin" not in report
  json.dumps(report)  # Serialisable as printed.


def test_markdown_and_plot(efficiency, report, tmp_path):
  table = efficiency.markdown(report)
  assert table.count(f"| {smallest_variant()} |") == len(report["rows"])
  efficiency.plot(report, str(tmp_path / "efficiency.png"))
  assert (tmp_path / "efficiency.png").stat().st_size > 0


def test_a_batch_that_does_not_fit_is_halved(efficiency):
  config = efficiency.make_config(smallest_variant(), "float32")
  model = models.build(config)
  cpu = jax.devices("cpu")[0]
  params = efficiency.init_params(model, cpu)
  batch, compiled, _, requested = efficiency.compile_fitting(
      model, params, config, 4, cpu, budget=1)
  assert batch == 1 and requested > efficiency.memory_bytes(compiled)["peak"]
  assert efficiency.memory_budget(cpu, 0.5) > 0


def test_torch_twin_has_the_paper_encoders_parameters(efficiency):
  pytest.importorskip("torch")
  twins = sys.modules["twins"]
  torch_params = sum(p.numel() for p in twins.torch_encoder().parameters())
  model = models.build(efficiency.make_config(efficiency.TWIN_VARIANT, "float32"))
  abstract = jax.eval_shape(lambda: models.init_params(model, jax.random.key(0)))
  assert torch_params == efficiency.encoder_params(abstract)
