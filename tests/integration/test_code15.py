"""CODE-15% and SaMi-Trop: exams.csv + HDF5 tracings (400 Hz, zero-padded to 4096)."""

import json
import pickle

import h5py
import numpy as np
import pytest

from crema_jax.data.readers import code15
from crema_jax.data.readers import registry
from crema_jax.data import records

CODE15_COLUMNS = ("exam_id,age,is_male,nn_predicted_age,1dAVb,RBBB,LBBB,SB,ST,AF,"
                  "patient_id,death,timey,normal_ecg,trace_file")


def _wave(seconds: float, rate: float) -> np.ndarray:
  """[time, 12] mV; lead k: (0.3 + 0.1 k) sin(2 pi (1 + 0.5 k) t + 0.5) (non-zero at t=0)."""
  t = np.arange(int(round(seconds * rate)))[:, None] / rate
  k = np.arange(12)[None, :]
  return ((0.3 + 0.1 * k) * np.sin(2 * np.pi * (1.0 + 0.5 * k) * t + 0.5)).astype(
      np.float32)


def _padded(seconds: float) -> np.ndarray:
  """A [4096, 12] tracing: the wave centred, zeros on both sides (as published)."""
  wave = _wave(seconds, 400)
  out = np.zeros((4096, 12), np.float32)
  start = (4096 - len(wave)) // 2
  out[start:start + len(wave)] = wave
  return out


def _write_hdf5(path, exam_ids, tracings):
  """CODE-15%'s layout; SaMi-Trop's (`tracings` only) when exam_ids is None."""
  tracings = np.stack(tracings)
  with h5py.File(path, "w") as f:
    f.create_dataset("tracings", data=tracings, chunks=(1, *tracings.shape[1:]))
    if exam_ids is not None:
      f.create_dataset("exam_id", data=np.asarray(exam_ids, np.int64))


@pytest.fixture(name="code15_dir", scope="module")
def _code15_dir(tmp_path_factory):
  """Two parts. part0: exams 101 (10 s, RBBB+AF), 102 (7 s, normal), 103 (padding
  only), then the all-zero slot with exam_id 0. part1: 201 (same patient as 101), 999
  (not in exams.csv)."""
  root = tmp_path_factory.mktemp("code15")
  zero = np.zeros((4096, 12), np.float32)
  _write_hdf5(root / "exams_part0.hdf5", [101, 102, 103, 0],
              [_padded(10), _padded(7), zero, zero])
  _write_hdf5(root / "exams_part1.hdf5", [201, 999], [_padded(10), _padded(10)])
  (root / "exams.csv").write_text("\n".join([
      CODE15_COLUMNS,
      "101,67,True,70.2,False,True,False,False,False,True,17,False,2.1,False,"
      "exams_part0.hdf5",
      "102,45,False,44.0,False,False,False,False,False,False,18,,,True,exams_part0.hdf5",
      "103,50,True,51.0,False,False,False,False,False,False,19,,,False,exams_part0.hdf5",
      "201,68,True,71.0,True,False,False,True,False,False,17,False,1.0,False,"
      "exams_part1.hdf5",
  ]) + "\n")
  return root


def test_keys_skip_unused_slots(code15_dir):
  source = code15.HDF5Exams(code15_dir, name="code15")
  assert source.keys() == ["exams_part0.hdf5/0", "exams_part0.hdf5/1",
                           "exams_part0.hdf5/2", "exams_part1.hdf5/0",
                           "exams_part1.hdf5/1"]


def test_padding_stripped_and_resampled(code15_dir):
  source = code15.HDF5Exams(code15_dir, sampling_rate=500, min_seconds=5)
  ten = source.read("exams_part0.hdf5/0")
  seven = source.read("exams_part0.hdf5/1")
  assert ten.ecg.shape == (5000, 12) and seven.ecg.shape == (3500, 12)
  assert ten.ecg.dtype == np.float32 and ten.sampling_rate == 500
  middle = slice(100, -100)
  np.testing.assert_allclose(ten.ecg[middle], _wave(10, 500)[middle], atol=2e-2)
  np.testing.assert_allclose(seven.ecg[middle], _wave(7, 500)[middle], atol=2e-2)
  # At the native rate the stripped tracing is the written wave, sample for sample.
  native = code15.HDF5Exams(code15_dir, sampling_rate=400).read("exams_part0.hdf5/1")
  np.testing.assert_array_equal(native.ecg, _wave(7, 400))


def test_labels_patients_and_demographics(code15_dir):
  source = code15.HDF5Exams(code15_dir, name="code15")
  a, b = source.read("exams_part0.hdf5/0"), source.read("exams_part0.hdf5/1")
  c = source.read("exams_part1.hdf5/0")
  assert (a.ecg_id, a.patient_id, a.age, a.sex) == (101, 17, 67.0, records.SEX_MALE)
  assert (b.ecg_id, b.patient_id, b.sex) == (102, 18, records.SEX_FEMALE)
  assert c.patient_id == a.patient_id == 17  # Two exams of one patient.
  assert json.loads(a.scp_codes) == {"RBBB": 1.0, "AF": 1.0}
  assert json.loads(b.scp_codes) == {"normal_ecg": 1.0}
  assert json.loads(c.scp_codes) == {"1dAVb": 1.0, "SB": 1.0}
  cd, norm = records.SUPERCLASSES.index("CD"), records.SUPERCLASSES.index("NORM")
  assert a.labels[cd] == 1 and a.labels.sum() == 1
  assert b.labels[norm] == 1 and b.labels.sum() == 1
  assert a.source == "code15" and a.record_name == "exams_part0.hdf5/101"
  assert a.fold == 0


def test_bad_tracings_are_record_errors(code15_dir):
  source = code15.HDF5Exams(code15_dir)
  with pytest.raises(records.RecordError, match="padding only") as e:
    source.read("exams_part0.hdf5/2")
  assert "exams_part0.hdf5" in e.value.path and "row 2" in e.value.path
  with pytest.raises(records.RecordError, match="exam_id 999 is not in exams.csv"):
    source.read("exams_part1.hdf5/1")
  with pytest.raises(records.RecordError, match="too short"):
    code15.HDF5Exams(code15_dir, min_seconds=8).read("exams_part0.hdf5/1")


def test_source_pickles_without_open_files(code15_dir):
  source = code15.HDF5Exams(code15_dir)
  first = source.read("exams_part0.hdf5/0")
  copy = pickle.loads(pickle.dumps(source))  # As sent to a prepare worker.
  np.testing.assert_array_equal(copy.read("exams_part0.hdf5/0").ecg, first.ecg)


SAMITROP_CSV = ("exam_id,age,is_male,normal_ecg,death,timey\n"
                "294669,61,False,False,True,1.5\n"
                "5,70,True,True,False,2.0\n"
                "1201,35,False,False,False,3.0\n")


def test_samitrop_published_layout(tmp_path):
  """exams.hdf5 holds `tracings` only: tracing i is the exam of exams.csv's row i (the
  ids are not sorted, so matching by sorted id would pair the wrong rows)."""
  _write_hdf5(tmp_path / "exams.hdf5", None,
              [_padded(10) * (1 + row) for row in range(3)])
  (tmp_path / "exams.csv").write_text(SAMITROP_CSV)
  source = code15.HDF5Exams(tmp_path, name="samitrop", sampling_rate=400)
  assert source.keys() == ["exams.hdf5/0", "exams.hdf5/1", "exams.hdf5/2"]
  exams = [source.read(key) for key in source.keys()]
  assert [r.ecg_id for r in exams] == [294669, 5, 1201]
  assert [r.patient_id for r in exams] == [294669, 5, 1201]  # Each its own patient.
  assert [r.age for r in exams] == [61.0, 70.0, 35.0]
  for row, record in enumerate(exams):
    np.testing.assert_allclose(record.ecg, _wave(10, 400) * (1 + row), rtol=1e-6)
  assert exams[0].sex == records.SEX_FEMALE and exams[1].sex == records.SEX_MALE
  assert exams[1].record_name == "exams.hdf5/5"
  assert json.loads(exams[0].scp_codes) == {}
  assert json.loads(exams[1].scp_codes) == {"normal_ecg": 1.0}
  import ml_collections  # pylint: disable=g-import-not-at-top
  built = registry.build_source(ml_collections.ConfigDict({
      "source": "samitrop", "raw_dir": str(tmp_path), "name": "samitrop",
      "sampling_rate": 500, "min_seconds": 5.0}))
  assert built.read("exams.hdf5/2").ecg_id == 1201


def test_samitrop_rows_must_match_tracings(tmp_path):
  _write_hdf5(tmp_path / "exams.hdf5", None, [_padded(10)] * 4)
  (tmp_path / "exams.csv").write_text(SAMITROP_CSV)
  with pytest.raises(records.SourceError, match="holds 4 tracings but .* has 3 rows"
                     ) as e:
    code15.HDF5Exams(tmp_path, name="samitrop")
  assert str(tmp_path / "exams.hdf5") in str(e.value)
  assert str(tmp_path / "exams.csv") in str(e.value)
  # Without exam_id, only one file can be matched by row.
  (tmp_path / "exams.hdf5").unlink()
  for part in ("exams_part0.hdf5", "exams_part1.hdf5"):
    _write_hdf5(tmp_path / part, None, [_padded(10)] * 3)
  with pytest.raises(records.SourceError, match="'exam_id' missing; only a single"):
    code15.HDF5Exams(tmp_path)


@pytest.mark.parametrize("num_samples", [2048, 5000])
def test_tracings_of_another_length_are_refused(tmp_path, num_samples):
  tracing = np.zeros((num_samples, 12), np.float32)
  tracing[10:10 + 400 * 5] = _wave(5, 400)  # A 5 s signal, as readable as any.
  _write_hdf5(tmp_path / "exams_part0.hdf5", [1], [tracing])
  (tmp_path / "exams.csv").write_text("exam_id,age,patient_id\n1,50,7\n")
  with pytest.raises(records.RecordError, match=f"{num_samples} samples each") as e:
    code15.HDF5Exams(tmp_path).read("exams_part0.hdf5/0")
  assert e.value.path == f"{tmp_path / 'exams_part0.hdf5'} (row 0)"
  assert f"(1, {num_samples}, 12)" in e.value.reason


@pytest.mark.parametrize("table, message", [
    ("exam_id,age,patient_id\n1,50,7\nx12,51,8\n", "'exam_id' .* e.g. 'x12'"),
    ("exam_id,age,patient_id\n1,50,7\n2,51,p17\n", "'patient_id' .* e.g. 'p17'"),
    ("exam_id,age,patient_id\n1,50,7\n2,51,3.5\n", "'patient_id' .* e.g. '3.5'"),
    ("exam_id,age,patient_id\n", "has no rows"),
], ids=["exam_id", "patient_id", "fractional_patient_id", "header_only"])
def test_bad_exam_tables_are_source_errors(tmp_path, table, message):
  _write_hdf5(tmp_path / "exams_part0.hdf5", [1, 2], [_padded(10)] * 2)
  (tmp_path / "exams.csv").write_text(table)
  with pytest.raises(records.SourceError, match=message) as e:
    code15.HDF5Exams(tmp_path)
  assert str(e.value).startswith(str(tmp_path / "exams.csv"))


def test_folder_problems_are_source_errors(tmp_path):
  with pytest.raises(records.SourceError, match="not found"):
    code15.HDF5Exams(tmp_path / "nowhere")
  (tmp_path / "exams.csv").write_text("exam_id,age\n1,50\n")
  with pytest.raises(records.SourceError, match="no HDF5 files"):
    code15.HDF5Exams(tmp_path)
  with h5py.File(tmp_path / "exams.hdf5", "w") as f:
    f.create_dataset("exam_id", data=np.array([1]))
  with pytest.raises(records.SourceError, match="'tracings' missing"):
    code15.HDF5Exams(tmp_path)
  (tmp_path / "exams.hdf5").unlink()
  _write_hdf5(tmp_path / "exams.hdf5", [1], [_padded(10)])
  (tmp_path / "exams.csv").write_text("id,age\n1,50\n")
  with pytest.raises(records.SourceError, match="'exam_id' missing"):
    code15.HDF5Exams(tmp_path)


def test_registered_readers(code15_dir):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({
      "source": "code15", "raw_dir": str(code15_dir), "name": "code15",
      "sampling_rate": 500, "min_seconds": 5.0})
  source = registry.build_source(config)
  assert isinstance(source, code15.HDF5Exams) and source.name == "code15"
