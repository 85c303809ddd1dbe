"""The Grain pipelines over the prepared synthetic PTB-XL demo data."""

import itertools

import numpy as np
import pytest

from crema_jax.data import storage
from crema_jax.input import pipeline
from crema_jax.input import views


@pytest.fixture(scope="module")
def prepared(demo_config):
  return storage.PreparedSource(demo_config.data.data_dir, "ptbxl")


def _take(it, n):
  return list(itertools.islice(it, n))


def test_pretrain_batch_holds_raw_crops_of_the_views_the_objective_uses(demo_config,
                                                                         prepared):
  b, t = demo_config.batch_size, demo_config.data.seq_len
  batch = next(iter(pipeline.pretrain_dataset(demo_config, prepared)))
  assert batch["signals"].shape == (b, 3, 12, t)  # HL with patient pairs, time last.
  assert batch["signals"].dtype == np.float16  # As stored: the step casts.
  assert batch["has_pair"].shape == (b,) and batch["has_pair"].dtype == bool
  assert batch["patient"].dtype == np.int32
  np.testing.assert_array_equal(batch["valid"], t)  # 10 s records, 10 s crops: no padding.
  # Two crops of one 10 s record of 10 s: its samples as stored (mV), each view
  # shifted in time by at most max_shift samples, the edge value repeated.
  record = prepared.data_source[int(batch["position"][0])]["ecg"][:t].T
  max_shift = views.max_shift_samples(demo_config.data.augment,
                                      demo_config.data.sampling_rate)
  for view in batch["signals"][0, :2]:
    shifts = [s for s in range(-max_shift, max_shift + 1)
              if np.array_equal(view, np.take(record, np.clip(np.arange(t) - s, 0, t - 1),
                                              axis=1))]
    assert shifts, "a view is not a time-shifted crop of its record"
  # GL reads and sends no pair view; CL neither without patient pairs.
  gl = demo_config.copy_and_resolve_references()
  gl.loss.patient = 0.0
  assert next(iter(pipeline.pretrain_dataset(gl, prepared)))["signals"].shape[1] == 2
  unpaired = demo_config.copy_and_resolve_references()
  unpaired.data.patient_pairs = False
  assert next(iter(pipeline.pretrain_dataset(unpaired, prepared)))["signals"].shape[1] == 2


def test_batched_read_decodes_as_tfds_does(prepared):
  positions = [5, 0, 5, len(prepared) - 1]
  for p, signal in zip(positions, prepared.read_signals(positions)):
    assert signal.dtype == np.float16 and signal.shape[1] == 12
    np.testing.assert_array_equal(signal, prepared.data_source[p]["ecg"])


def test_a_source_prepared_in_another_format_is_refused(tmp_path):
  path = storage.dataset_dir(tmp_path, "old")
  path.mkdir(parents=True)
  (path / "manifest.json").write_text('{"source": "old", "format": 1}')
  with pytest.raises(ValueError, match="manifest.json: prepared in format 1.*prepare"):
    storage.PreparedSource(tmp_path, "old")


def test_worker_count_auto_is_sized_to_the_host():
  assert pipeline.worker_count("auto", cpus=2) == 0
  assert pipeline.worker_count("auto", cpus=10) == 8
  assert pipeline.worker_count("auto", cpus=200) == 16
  assert pipeline.worker_count(3) == pipeline.worker_count("3") == 3
  with pytest.raises(ValueError, match="data.worker_count='many'"):
    pipeline.worker_count("many")


def test_pretraining_reads_only_pretrain_folds(demo_config, prepared):
  positions = np.concatenate([b["position"] for b in
                              _take(iter(pipeline.pretrain_dataset(demo_config, prepared)), 8)])
  folds = prepared.index["fold"][positions]
  assert set(folds.tolist()) <= set(demo_config.data.pretrain_folds)


def test_same_patient_pairing(demo_config, prepared):
  patient_ids = prepared.index["patient_id"]
  pretrain = storage.fold_positions(prepared, demo_config.data.pretrain_folds)
  ecgs_per_patient = {p: int(n) for p, n in
                      zip(*np.unique(patient_ids[pretrain], return_counts=True))}
  seen_pair = seen_single = False
  for batch in _take(iter(pipeline.pretrain_dataset(demo_config, prepared)), 10):
    for i in range(len(batch["position"])):
      pos, pair_pos = batch["position"][i], batch["pair_position"][i]
      count = ecgs_per_patient[patient_ids[pos]]
      assert batch["has_pair"][i] == (count > 1)
      if batch["has_pair"][i]:
        seen_pair = True
        assert pair_pos != pos and patient_ids[pair_pos] == patient_ids[pos]
        assert prepared.index["fold"][pair_pos] in demo_config.data.pretrain_folds
      else:
        seen_single = True
        assert pair_pos == pos
    # Equal patient keys exactly where patient ids are equal.
    same_key = batch["patient"][:, None] == batch["patient"][None, :]
    same_id = patient_ids[batch["position"]][:, None] == patient_ids[batch["position"]][None]
    np.testing.assert_array_equal(same_key, same_id)
  assert seen_pair and seen_single


def test_pipeline_is_reproducible(demo_config, prepared):
  a = next(iter(pipeline.pretrain_dataset(demo_config, prepared)))
  b = next(iter(pipeline.pretrain_dataset(demo_config, prepared)))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_iterator_state_resumes_exactly(demo_config, prepared):
  it = iter(pipeline.pretrain_dataset(demo_config, prepared))
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 3)
  resumed = iter(pipeline.pretrain_dataset(demo_config, prepared))
  resumed.set_state(state)
  for want, got in zip(expected, _take(resumed, 3)):
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])


def test_processes_read_disjoint_records(demo_config, prepared):
  config = demo_config
  n = len(storage.fold_positions(prepared, config.data.pretrain_folds))
  seen = []
  for index in range(2):
    epoch = len(range(index, n, 2))  # This process's records.
    it = iter(pipeline.pretrain_dataset(config, prepared, process_index=index,
                                        process_count=2))
    batches = -(-epoch // (config.batch_size // 2))
    positions = np.concatenate([b["position"] for b in _take(it, batches)])
    assert positions.shape == (batches * config.batch_size // 2,)
    seen.append(set(positions[:epoch].tolist()))
    assert len(seen[-1]) == epoch  # One epoch visits each of its records once.
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == n


def test_global_batch_must_divide_over_processes(demo_config, prepared):
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    pipeline.pretrain_dataset(demo_config, prepared, process_index=0, process_count=3)


def test_eval_dataset_yields_each_record_once(demo_config, prepared):
  folds = demo_config.data.test_folds + demo_config.data.val_folds
  expected = storage.fold_positions(prepared, folds)
  batches = list(pipeline.eval_dataset(demo_config, prepared, folds, batch_size=7))
  positions = np.concatenate([b["position"] for b in batches])
  np.testing.assert_array_equal(positions, expected)
  labels = np.concatenate([b["labels"] for b in batches])
  np.testing.assert_array_equal(labels, prepared.index["labels"][expected])
  view = batches[0]["view"]
  assert view.shape[1:] == (12, demo_config.data.seq_len) and view.dtype == np.float32
  first = prepared.data_source[int(expected[0])]["ecg"]  # The centred crop, in mV.
  np.testing.assert_array_equal(view[0], first[:demo_config.data.seq_len].T)
  again = next(iter(pipeline.eval_dataset(demo_config, prepared, folds, batch_size=7)))
  np.testing.assert_array_equal(again["view"], view)  # Unaugmented: deterministic.
