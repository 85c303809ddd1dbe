"""prepare: synthetic PTB-XL folder -> ArrayRecord shards, manifest, index; resume."""

import json
import os
import pathlib
import shutil

import ml_collections
import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
import wfdb

from crema_jax.data import prepare
from crema_jax.data.readers import ptbxl
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.data import synthetic


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("raw") / "ptbxl"
  synthetic.write_synthetic_ptbxl(root, num_patients=12, seed=3)
  return root


def _bits(x):
  return np.asarray(x, np.float16).view(np.uint16)


def test_round_trip_is_bit_exact_float16(raw_dir, tmp_path):
  source = ptbxl.PTBXL(raw_dir, sampling_rate=500)
  manifest = prepare.prepare(source, tmp_path, records_per_shard=7, num_workers=2,
                             show_progress=False)
  keys = source.keys()
  assert manifest["num_records"] == len(keys) and manifest["num_skipped"] == 0
  assert manifest["num_shards"] == -(-len(keys) // 7)
  data_source = tfds.data_source("ptbxl", data_dir=str(tmp_path), split="full")
  assert len(data_source) == len(keys)
  prepared = storage.PreparedSource(tmp_path, "ptbxl")
  for i, key in enumerate(keys):
    record = source.read(key)
    example = data_source[i]
    assert example["ecg"].dtype == np.float16 and example["ecg"].shape == (5000, 12)
    np.testing.assert_array_equal(_bits(example["ecg"]), _bits(record.ecg))
    assert example["ecg_id"] == record.ecg_id == prepared.index["ecg_id"][i]
    assert example["patient_id"] == prepared.index["patient_id"][i]
    np.testing.assert_array_equal(example["labels"], record.labels)
    np.testing.assert_array_equal(prepared.index["labels"][i], record.labels)
    assert example["fold"] == record.fold == prepared.index["fold"][i]
  table = pd.read_csv(raw_dir / "ptbxl_database.csv")
  assert manifest["num_patients"] == table["patient_id"].nunique()
  assert sum(manifest["fold_counts"].values()) == len(keys)


def _corrupt(raw_dir, tmp_path):
  """A copy of the folder with four broken records; returns (copy, broken ecg_ids)."""
  root = tmp_path / "broken"
  shutil.copytree(raw_dir, root)
  table = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
  ids = list(table.index[:4])
  # A gain of 1 instead of 1000 ADC units/mV: a valid header, every lead 1000x too big.
  header = root / (table.loc[ids[3], "filename_hr"] + ".hea")
  header.write_text(header.read_text().replace(" 1000.0(0)/mV", " 1.0(0)/mV"))
  dat = root / (table.loc[ids[0], "filename_hr"] + ".dat")
  dat.write_bytes(dat.read_bytes()[:1000])  # Truncated download.
  table.loc[ids[1], "scp_codes"] = "{'NORM': 100.0"  # Malformed dict string.
  name = table.loc[ids[2], "filename_hr"]
  rec = wfdb.rdrecord(str(root / name))
  flat = rec.p_signal.copy()
  flat[:, 4] = 0.0
  wfdb.wrsamp(os.path.basename(name), fs=rec.fs, units=rec.units, sig_name=rec.sig_name,
              p_signal=flat, fmt=rec.fmt, adc_gain=rec.adc_gain, baseline=rec.baseline,
              write_dir=str((root / name).parent))
  table.to_csv(root / "ptbxl_database.csv")
  return root, ids


def test_bad_records_are_skipped_and_reported(raw_dir, tmp_path):
  root, broken = _corrupt(raw_dir, tmp_path)
  source = ptbxl.PTBXL(root, sampling_rate=500)
  manifest = prepare.prepare(source, tmp_path / "out", records_per_shard=50,
                             num_workers=1, show_progress=False)
  assert manifest["num_skipped"] == 4
  assert manifest["num_records"] == len(source.keys()) - 4
  skipped = {int(s["key"]): s for s in manifest["skipped"]}
  assert set(skipped) == set(broken)
  assert "_hr" in skipped[broken[0]]["path"]
  assert "scp_codes" in skipped[broken[1]]["reason"]
  assert "flat" in skipped[broken[2]]["reason"] and "aVL" in skipped[broken[2]]["reason"]
  assert "beyond 30 mV" in skipped[broken[3]]["reason"]
  assert skipped[broken[3]]["path"].endswith("_hr")  # The record, under the root.
  on_disk = json.loads((storage.dataset_dir(tmp_path / "out", "ptbxl") /
                        "manifest.json").read_text())
  assert on_disk["skipped"] == manifest["skipped"]
  prepared = storage.PreparedSource(tmp_path / "out", "ptbxl")
  assert not set(broken) & set(prepared.index["ecg_id"].tolist())
  assert "skipped" in prepare.summarize(manifest)


def test_rerun_writes_only_missing_shards(raw_dir, tmp_path):
  source = ptbxl.PTBXL(raw_dir, sampling_rate=500)
  first = prepare.prepare(source, tmp_path, records_per_shard=8, num_workers=1,
                          show_progress=False)
  out = storage.dataset_dir(tmp_path, "ptbxl")
  before = [ex["ecg"] for ex in tfds.data_source("ptbxl", data_dir=str(tmp_path),
                                                 split="full")]
  # Interrupted run: shard 1 never finished.
  (out / "_progress" / "shard-00001.json").unlink()
  (out / storage.shard_filename("ptbxl", 1, first["num_shards"])).unlink()
  second = prepare.prepare(source, tmp_path, records_per_shard=8, num_workers=1,
                           show_progress=False)
  assert second["records_read_this_run"] == 8
  third = prepare.prepare(source, tmp_path, records_per_shard=8, num_workers=1,
                          show_progress=False)
  assert third["records_read_this_run"] == 0
  after = [ex["ecg"] for ex in tfds.data_source("ptbxl", data_dir=str(tmp_path),
                                                split="full")]
  assert len(after) == len(before)
  for a, b in zip(before, after):
    np.testing.assert_array_equal(_bits(a), _bits(b))


def test_damaged_shards_are_named_verified_and_rewritten(raw_dir, tmp_path):
  source = ptbxl.PTBXL(raw_dir, sampling_rate=500)
  first = prepare.prepare(source, tmp_path, records_per_shard=8, num_workers=1,
                          show_progress=False)
  out = storage.dataset_dir(tmp_path, "ptbxl")
  flipped = out / storage.shard_filename("ptbxl", 1, first["num_shards"])
  data = bytearray(flipped.read_bytes())
  data[len(data) // 3] ^= 0xFF  # A bit-flipped disk block: the shard still opens.
  flipped.write_bytes(bytes(data))
  emptied = out / storage.shard_filename("ptbxl", 2, first["num_shards"])
  emptied.write_bytes(b"")
  with pytest.raises(storage.CorruptShardError, match=f"{emptied.name}: does not open"):
    storage.PreparedSource(tmp_path, "ptbxl")  # Refused at open, not mid-run.
  config = ml_collections.ConfigDict({"source": "ptbxl", "name": "ptbxl",
                                      "data_dir": str(tmp_path)})
  report = prepare.verify_from_config(config)["ptbxl"]
  assert [pathlib.Path(r["shard"]).name for r in report] == [flipped.name, emptied.name]
  assert "hash mismatch" in report[0]["problem"]
  again = prepare.prepare(source, tmp_path, records_per_shard=8, num_workers=1,
                          show_progress=False)
  assert again["records_read_this_run"] == 16  # Exactly the two damaged shards.
  assert prepare.verify_from_config(config) == {"ptbxl": []}
  prepared = storage.PreparedSource(tmp_path, "ptbxl")
  # A shard damaged after opening: the read names it.
  flipped.write_bytes(bytes(data))
  with pytest.raises(storage.CorruptShardError, match=flipped.name):
    prepared.read_signals(range(len(prepared)))


def test_resume_with_other_settings_is_refused(raw_dir, tmp_path):
  source = ptbxl.PTBXL(raw_dir, sampling_rate=500)
  prepare.prepare(source, tmp_path, records_per_shard=8, num_workers=1,
                  show_progress=False)
  with pytest.raises(ValueError, match="records_per_shard"):
    prepare.prepare(source, tmp_path, records_per_shard=5, num_workers=1,
                    show_progress=False)


def test_missing_folder_stops_before_work(tmp_path, demo_config):
  config = demo_config.copy_and_resolve_references()
  config.data.raw_dir = str(tmp_path / "nowhere")
  config.data.data_dir = str(tmp_path / "out")
  with pytest.raises(records.SourceError, match="nowhere"):
    prepare.prepare_from_config(config.data, show_progress=False)
  assert not (tmp_path / "out").exists()
