"""The paper's pretraining step compiled ahead of time for a TPU v5e (libtpu's
compile-only devices, in a subprocess: `benchmarks/tpu_aot.py`), checked by what XLA's
TPU compiler says about it: it fits at the batch configs/pretrain.py:tpu=v5e trains
at, no collective moves signals, tokens or latents, the view preparation's share of
the estimated cycles stays small, and no signal is laid out with its leads on the
128 lanes or gathered along time (the two regressions that made it slow before).
Needs libtpu in .libtpu (tests/run.sh installs it); skipped, saying so, without it.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from configs import pretrain

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIBTPU = pathlib.Path(os.environ.get("CREMA_LIBTPU_DIR", ROOT / ".libtpu"))
VIEWS_MAX_SHARE = 0.15  # Of the step's estimated cycles: 0.11 now, 0.43 before.

pytestmark = pytest.mark.skipif(
    not (LIBTPU / "libtpu").is_dir(),
    reason=f"libtpu is not installed in {LIBTPU} (bash tests/run.sh installs it)")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  """The estimates' JSON and the compiled step's TPU HLO text."""
  out = tmp_path_factory.mktemp("tpu_aot")
  chips = 4
  config = pretrain.get_config(f"hl,tpu=v5e,chips={chips}")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["CREMA_TPU_HLO_DIR"] = str(out)
  subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "tpu_aot.py"), "--topologies",
       "v5e:2x2", "--programs", "train", "--batch_per_chip",
       str(config.batch_size // chips),
       "--shard_optimizer" if config.mesh.shard_optimizer else "--fsdp=1",
       "--out", str(out / "aot.json")], check=True, env=env, cwd=ROOT, timeout=1200)
  result = json.loads((out / "aot.json").read_text())
  (target,) = result["targets"]
  assert target["chips"] == chips
  (row,) = target["programs"]["train"]["at_batch"]
  (hlo,) = out.glob("*.hlo")
  return row, hlo.read_text(), config


def test_the_paper_step_fits_a_v5e_at_the_recommended_batch(compiled):
  row, _, config = compiled
  assert row["global_batch"] == config.batch_size
  assert row["fits"] and row["hbm_fraction"] <= 0.9, row["hbm_gib_per_chip"]


def test_no_collective_moves_signals_tokens_or_latents(compiled):
  row, _, _ = compiled
  assert row["activation_collective_bytes"] == 0
  assert "all-reduce" in row["collectives"]  # Gradients do move.


def test_view_preparation_is_a_small_share_of_the_step(compiled):
  row, _, _ = compiled
  shares = row["cycle_share_by_stage"]
  assert 0 < shares["views"] <= VIEWS_MAX_SHARE, shares
  assert shares["encoder"] > shares["views"] and shares["decoder"] > shares["views"]


def test_signals_are_never_lane_padded_nor_gathered(compiled):
  _, hlo, config = compiled
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import tpu_hlo  # pylint: disable=g-import-not-at-top
  t = str(config.data.seq_len)
  padded = [a for a in tpu_hlo.lane_padded_arrays(hlo) if t in a["shape"]]
  assert not padded, padded  # e.g. f32[64,3,5000,12] with its 12 leads on 128 lanes.
  assert not tpu_hlo.gathers(hlo), tpu_hlo.gathers(hlo)[:3]
