"""Reduced leads: `data.leads` subsets through prepare, the pipeline and the model, and
a 12-lead dataset evaluated on fewer leads (`data.eval_leads`)."""

import shutil

import h5py
import jax
import numpy as np
import pytest

from configs import demo
from crema_jax.data import prepare
from crema_jax.data.readers import registry
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.input import pipeline
from crema_jax import sharding
from crema_jax import step as step_lib


def _config(raw_dir, data_dir, **data_fields):
  config = demo.get_config("test")
  config.data.update(dict(raw_dir=str(raw_dir), data_dir=str(data_dir),
                          pretrain_folds=(), prepare_workers=1, records_per_shard=50,
                          **data_fields))
  return config


@pytest.fixture(name="holter", scope="module")
def _holter(shared_data, tmp_path_factory):
  """MIT-BIH record 100 (MLII, V5) prepared as 2-lead 10 s windows every 60 s."""
  raw = tmp_path_factory.mktemp("mitdb")
  for suffix in (".hea", ".dat"):
    shutil.copy(shared_data / "mitdb" / f"100{suffix}", raw)
  config = _config(raw, tmp_path_factory.mktemp("prepared"), source="wfdb",
                   name="mitdb", leads=("II", "V5"), lead_aliases="MLII=II",
                   window_seconds=10.0, window_stride_seconds=60.0)
  config.model.num_leads = 2
  manifest = prepare.prepare_from_config(config.data, show_progress=False)
  return config, manifest


def test_prepared_with_two_leads(holter):
  config, manifest = holter
  assert manifest["leads"] == ["II", "V5"] and manifest["num_records"] == 30
  prepared = storage.PreparedSource(config.data.data_dir, "mitdb")
  example = prepared.data_source[3]
  assert example["ecg"].shape == (5000, 2) and example["ecg"].dtype == np.float16
  assert len(set(prepared.index["patient_id"].tolist())) == 1  # One recording.


def test_two_lead_pretraining_batches_and_model(holter):
  config, _ = holter
  config = config.copy_and_resolve_references()
  config.data.seq_len = 1000  # 2 s crops keep the model check fast.
  prepared = storage.PreparedSource(config.data.data_dir, "mitdb")
  batch = next(iter(pipeline.pretrain_dataset(config, prepared)))
  assert batch["signals"].shape == (config.batch_size, 3, 2, 1000)
  assert batch["has_pair"].all()  # Windows of one recording pair with each other.
  mesh = sharding.make_mesh(1)
  run = step_lib.build_run(config, mesh)
  state = run.initial_state(jax.random.key(0))
  _, out = run.train_step(state, sharding.global_batch(mesh, step_lib.host_inputs(batch)))
  assert np.isfinite(float(out["loss"])) and float(out["loss"]) > 0
  twelve = config.copy_and_resolve_references()
  twelve.model.num_leads = 12
  with pytest.raises(ValueError, match=r"holds 2 lead\(s\) \['II', 'V5'\] but "
                     "model.num_leads=12"):
    pipeline.pretrain_dataset(twelve, prepared)


@pytest.fixture(name="twelve_lead", scope="module")
def _twelve_lead(tmp_path_factory):
  """A 4-exam CODE-15%-format set prepared with all 12 leads."""
  raw = tmp_path_factory.mktemp("code15")
  t = np.arange(4000)[:, None] / 400
  tracings = np.zeros((4, 4096, 12), np.float32)
  for i in range(4):
    tracings[i, 48:4048] = (0.2 + 0.05 * np.arange(12)) * np.sin(
        2 * np.pi * (1 + i + 0.3 * np.arange(12)) * t + 0.4)
  with h5py.File(raw / "exams_part0.hdf5", "w") as f:
    f.create_dataset("tracings", data=tracings)
    f.create_dataset("exam_id", data=np.arange(1, 5))
  (raw / "exams.csv").write_text("exam_id,age,is_male,patient_id\n" +
                                 "".join(f"{i},50,True,{i}\n" for i in range(1, 5)))
  config = _config(raw, tmp_path_factory.mktemp("prepared"), source="code15",
                   name="code15")
  prepare.prepare_from_config(config.data, show_progress=False)
  return config


def test_12_lead_data_evaluated_on_fewer_leads(twelve_lead):
  config = twelve_lead.copy_and_resolve_references()
  prepared = storage.PreparedSource(config.data.data_dir, "code15")
  full = next(iter(pipeline.eval_dataset(config, prepared, (), 4)))["view"]
  config.data.eval_leads = ("I", "II")
  limb = next(iter(pipeline.eval_dataset(config, prepared, (), 4)))["view"]
  assert limb.shape == full.shape == (4, 12, config.data.seq_len)
  np.testing.assert_array_equal(limb[:, :2], full[:, :2])  # [b, leads, time]
  assert not limb[:, 2:].any() and full[:, 2:].any()
  config.data.eval_leads = ("V7",)
  with pytest.raises(ValueError, match="not among the prepared leads"):
    pipeline.eval_dataset(config, prepared, (), 4)


def test_12_lead_formats_cut_to_a_subset(twelve_lead):
  config = twelve_lead.copy_and_resolve_references()
  full = registry.build_source(config.data).read("exams_part0.hdf5/1")
  config.data.leads = ("V6", "I")
  source = registry.build_source(config.data)
  assert isinstance(source, registry.SelectLeads) and source.leads == ("I", "V6")
  record = source.read("exams_part0.hdf5/1")
  np.testing.assert_array_equal(record.ecg, full.ecg[:, [0, 11]])
  assert record.ecg_id == full.ecg_id and records.LEADS[11] == "V6"
