"""A mixed corpus of three sources (CODE-15%, SaMi-Trop, CinC 2021): prepare once,
leakage guard against PTB-XL copies, weighted mixing with namespaced patients,
pretraining a few steps and resuming."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.signal
import wfdb

from configs import corpus as corpus_config
from configs import demo
from crema_jax.data import leakage
from crema_jax.data import prepare
from crema_jax.data.readers import ptbxl
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.data import synthetic
from crema_jax.input import pipeline
from crema_jax import train

WEIGHTS = {"code15": 0.5, "samitrop": 0.2, "cinc": 0.3}


def _ecg(seed: int, seconds: float, rate: float) -> np.ndarray:
  """[time, 12] mV: a different sum of sines for every seed."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate))[:, None] / rate
  freq, phase = rng.uniform(0.8, 8, (3, 12)), rng.uniform(0, 6.28, (3, 12))
  amp = rng.uniform(0.1, 0.6, (3, 12))
  return sum(a * np.sin(2 * np.pi * f * t + p)
             for a, f, p in zip(amp, freq, phase)).astype(np.float32)


def _write_hdf5_set(root, exam_ids, patient_ids=None):
  """exams.csv + exams.hdf5 (SaMi-Trop) or exams_part0.hdf5 (CODE-15%) at 400 Hz."""
  root.mkdir(parents=True)
  tracings = np.zeros((len(exam_ids), 4096, 12), np.float32)
  for i, exam in enumerate(exam_ids):
    tracings[i, 48:4048] = _ecg(exam, 10, 400)
  name = "exams.hdf5" if patient_ids is None else "exams_part0.hdf5"
  with h5py.File(root / name, "w") as f:
    f.create_dataset("tracings", data=tracings, chunks=(1, 4096, 12))
    if patient_ids is not None:  # SaMi-Trop's exams.hdf5 has no exam_id: row order.
      f.create_dataset("exam_id", data=np.asarray(exam_ids, np.int64))
  if patient_ids is None:
    lines = ["exam_id,age,is_male,normal_ecg,death,timey"]
    lines += [f"{e},60,True,False,False,1.0" for e in exam_ids]
  else:
    lines = ["exam_id,age,is_male,nn_predicted_age,1dAVb,RBBB,LBBB,SB,ST,AF,"
             "patient_id,death,timey,normal_ecg,trace_file"]
    lines += [f"{e},60,True,61,False,False,False,False,False,False,{p},False,1.0,"
              f"True,{name}" for e, p in zip(exam_ids, patient_ids)]
  (root / "exams.csv").write_text("\n".join(lines) + "\n")


def _write_challenge(directory, name, digital, gain, rate, dx="426783006"):
  """A Challenge record (.hea text + savemat 'val') from int16 [time, 12] samples."""
  directory.mkdir(parents=True, exist_ok=True)
  val = np.asarray(digital, np.int16).T
  lines = [f"{name} 12 {rate} {val.shape[1]}"]
  for lead, row in zip(records.LEADS, val):
    lines.append(f"{name}.mat 16+24 {gain}/mV 16 0 {row[0]} 0 0 {lead}")
  lines += ["# Age: 60", "# Sex: Male", f"# Dx: {dx}"]
  (directory / f"{name}.hea").write_text("\n".join(lines) + "\n")
  scipy.io.savemat(directory / f"{name}.mat", {"val": val})


@pytest.fixture(name="world", scope="module")
def _world(tmp_path_factory):
  """A synthetic PTB-XL (the reference) and three raw sources; the CinC set holds
  copies of PTB-XL records: test-fold ones under their Challenge name (HR.....),
  renamed, and renamed at 1000 Hz; one fold-2 record renamed."""
  root = tmp_path_factory.mktemp("world")
  ptbxl_dir = root / "ptbxl"
  synthetic.write_synthetic_ptbxl(ptbxl_dir, num_patients=12, seed=8)
  table = pd.read_csv(ptbxl_dir / "ptbxl_database.csv").to_dict("records")
  test = [r for r in table if r["strat_fold"] == 10][:3]
  train_row = next(r for r in table if r["strat_fold"] == 2)
  _write_hdf5_set(root / "code15", [11, 12, 13, 14, 15, 16], [1, 1, 2, 2, 3, 17])
  _write_hdf5_set(root / "samitrop", [17, 18, 19])
  cinc = root / "cinc" / "training"
  for i in range(4):  # Unrelated Challenge records, one with an unknown Dx code.
    digital = np.round(_ecg(100 + i, 10, 500) * 1000)
    _write_challenge(cinc / "georgia", f"E{i:05d}", digital, 1000, 500,
                     dx="426783006,999999999" if i == 0 else "426783006")

  def digital(row):
    rec = wfdb.rdrecord(str(ptbxl_dir / row["filename_hr"]), physical=False)
    return rec.d_signal, rec.adc_gain[0]

  d, gain = digital(test[0])
  _write_challenge(cinc / "ptb-xl", f"HR{test[0]['ecg_id']:05d}", d, gain, 500)
  d, gain = digital(test[1])
  _write_challenge(cinc / "cpsc_2018", "A9001", d, gain, 500)
  d, gain = digital(test[2])
  up = scipy.signal.resample_poly(d.astype(np.float64), 2, 1, axis=0, padtype="line")
  _write_challenge(cinc / "ningbo", "JS9002", np.round(up), gain, 1000)
  d, gain = digital(train_row)
  _write_challenge(cinc / "georgia", "E9003", d, gain, 500)
  return {"root": root, "ptbxl": ptbxl_dir,
          "test_ids": [r["ecg_id"] for r in test], "train_id": train_row["ecg_id"]}


def _config(world, data_dir, exclude_folds=(), with_reference=True):
  config = demo.get_config("test")
  data = config.data
  data.source, data.name, data.data_dir = "corpus", "corpus", str(data_dir)
  data.pretrain_folds = ()
  data.records_per_shard = 3
  data.prepare_workers = 1
  for name, reader in (("code15", "code15"), ("samitrop", "samitrop"),
                       ("cinc", "cinc")):
    data.corpus[name] = corpus_config.source(reader, WEIGHTS[name],
                                             raw_dir=str(world["root"] / name))
  data.leakage.ptbxl_dir = str(world["ptbxl"]) if with_reference else ""
  data.leakage.exclude_folds = exclude_folds
  return config


@pytest.fixture(name="prepared_corpus", scope="module")
def _prepared_corpus(world, tmp_path_factory):
  config = _config(world, tmp_path_factory.mktemp("prepared"))
  manifest = prepare.prepare_from_config(config.data, show_progress=False)
  return config, manifest


def test_corpus_manifest_and_leakage_exclusion(world, prepared_corpus):
  config, manifest = prepared_corpus
  assert manifest["kind"] == "corpus"
  members = {m["name"]: m for m in manifest["members"]}
  assert {n: m["num_records"] for n, m in members.items()} == {
      "code15": 6, "samitrop": 3, "cinc": 4}
  assert manifest["num_records"] == 13
  # Every copy of a PTB-XL ECG is out, counted, and said where it came from.
  assert manifest["leakage"]["num_excluded"] == 4
  assert manifest["leakage"]["excluded_from"] == {"code15": 0, "samitrop": 0, "cinc": 4}
  cinc = storage.PreparedSource(config.data.data_dir, "cinc")
  assert cinc.manifest["leakage"]["excluded_by"] == {"fingerprint": 3, "id": 1}
  assert cinc.manifest["leakage"]["excluded_folds"] == {"10": 3, "2": 1}
  found = {m["key"].rsplit("/", 1)[1]: m["ptbxl_ecg_id"]
           for m in cinc.manifest["leakage_matches"]}
  assert found == {f"HR{world['test_ids'][0]:05d}": world["test_ids"][0],
                   "A9001": world["test_ids"][1], "JS9002": world["test_ids"][2],
                   "E9003": world["train_id"]}
  report = leakage.check_pretraining_data(config.data, test_folds=(10,))
  assert report["status"] == "clean" and report["excluded"]["cinc"] == 4
  assert cinc.manifest["notes"] == {"unknown Dx code 999999999": 1}
  assert cinc.manifest["num_skipped"] == 0
  assert "excluded as PTB-XL folds" in prepare.summarize(manifest)


def test_sources_are_prepared_once(world, prepared_corpus):
  config, _ = prepared_corpus
  again = prepare.prepare_from_config(config.data, show_progress=False)
  assert again["num_records"] == 13
  for name in WEIGHTS:
    member = storage.PreparedSource(config.data.data_dir, name)
    assert member.manifest["records_read_this_run"] == 0


def test_kept_test_fold_copies_are_refused(world, tmp_path):
  config = _config(world, tmp_path, exclude_folds=(1, 2, 3, 4, 5, 6, 7, 8, 9))
  manifest = prepare.prepare_from_config(config.data, show_progress=False)
  assert manifest["leakage"]["excluded_from"]["cinc"] == 1  # The fold-2 copy only.
  with pytest.raises(leakage.LeakageError, match="3 from cinc"):
    leakage.check_pretraining_data(config.data, test_folds=(10,))
  report = leakage.check_pretraining_data(config.data, test_folds=(10,), allow=True)
  assert report["status"] == "overlap" and report["overlap"] == {"cinc": 3}
  assert leakage.pretraining_overlap(config.data, (9,))["status"] == "clean"


def test_unchecked_corpus(world, tmp_path):
  config = _config(world, tmp_path, with_reference=False)
  manifest = prepare.prepare_from_config(config.data, show_progress=False)
  assert manifest["leakage"] is None and manifest["num_records"] == 17
  with pytest.raises(leakage.LeakageError, match="never checked against PTB-XL"):
    leakage.check_pretraining_data(config.data)
  report = leakage.check_pretraining_data(config.data, allow=True)
  assert report["status"] == "unchecked"
  assert sorted(report["unchecked"]) == ["cinc", "code15", "samitrop"]


def test_ptbxl_pretraining_folds_are_checked(world, tmp_path):
  config = demo.get_config("test")
  config.data.raw_dir, config.data.data_dir = str(world["ptbxl"]), str(tmp_path)
  config.data.prepare_workers = 1
  prepare.prepare_from_config(config.data, show_progress=False)
  assert leakage.pretraining_overlap(config.data, (10,))["status"] == "clean"
  config.data.pretrain_folds = ()
  with pytest.raises(leakage.LeakageError, match="from ptbxl"):
    leakage.check_pretraining_data(config.data, (10,))


def test_mixed_pipeline_weights_and_namespaced_patients(prepared_corpus):
  config, _ = prepared_corpus
  corpus = storage.PreparedSource(config.data.data_dir, "corpus")
  names = [m.name for m in corpus.members]
  assert sorted(names) == sorted(WEIGHTS)
  np.testing.assert_allclose(corpus.weights, [WEIGHTS[n] for n in names])
  # Patient 17 exists in CODE-15% and as exam 17 in SaMi-Trop: two different keys.
  raw = {m.name: m.index["patient_id"] for m in corpus.members}
  assert 17 in raw["code15"] and 17 in raw["samitrop"]
  keys = corpus.index["patient_id"]
  source = corpus.index["source_index"]
  code15, samitrop = names.index("code15"), names.index("samitrop")
  assert (keys[source == code15][raw["code15"] == 17][0] !=
          keys[source == samitrop][raw["samitrop"] == 17][0])
  it = iter(pipeline.pretrain_dataset(config, corpus))
  batches = [next(it) for _ in range(25)]
  positions = np.concatenate([b["position"] for b in batches])
  member = np.searchsorted(corpus.starts, positions, side="right") - 1
  shares = np.bincount(member, minlength=3) / len(member)
  np.testing.assert_allclose(shares, [WEIGHTS[n] for n in names], atol=0.06)
  for b in batches:
    pos, pair = b["position"], b["pair_position"]
    # A partner is a record of the same source and patient.
    np.testing.assert_array_equal(keys[pos], keys[pair])
    # Batch patient keys are equal exactly where the namespaced patients are.
    same_key = b["patient"][:, None] == b["patient"][None, :]
    same_patient = keys[pos][:, None] == keys[pos][None, :]
    np.testing.assert_array_equal(same_key, same_patient)
  assert any(b["has_pair"].any() for b in batches)  # CODE-15% patients 1, 2.
  # The batched read puts each member's records back in the order asked for.
  asked = [int(positions[member == m][k]) for k in (0, 1) for m in (2, 0, 1)]
  for p, signal in zip(asked, corpus.read_signals(asked)):
    np.testing.assert_array_equal(signal, corpus.data_source[p]["ecg"])


def test_pretrains_and_resumes_on_the_corpus(prepared_corpus, tmp_path):
  config, _ = prepared_corpus
  config = config.copy_and_resolve_references()
  config.data.seq_len = 1000  # 2 s crops: the loop, not the model, is under test.
  config.total_steps = 2
  config.checkpoint_every = 2
  config.log_every = 1
  first = train.pretrain(config, tmp_path / "run")
  assert first["step"] == 2 and first["start_step"] == 0
  config.total_steps = 3
  second = train.pretrain(config, tmp_path / "run")
  assert second["start_step"] == 2 and second["step"] == 3
  logged = [json.loads(line) for line in
            (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  losses = [row["loss"] for row in logged if "loss" in row]
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  # What a probe calls on the run before scoring PTB-XL's test fold.
  assert leakage.check_checkpoint(tmp_path / "run", (10,))["status"] == "clean"


def test_reference_in_worker_processes_matches_one_process(world, tmp_path):
  one = leakage.build_reference(world["ptbxl"], 500, show_progress=False)
  two = leakage.build_reference(world["ptbxl"], 500, tmp_path / "ref.npz",
                                show_progress=False, num_workers=2)
  np.testing.assert_array_equal(one.ecg_ids, two.ecg_ids)
  np.testing.assert_array_equal(one.fingerprints, two.fingerprints)
  cached = leakage.build_reference(world["ptbxl"], 500, tmp_path / "ref.npz")
  np.testing.assert_array_equal(cached.folds, one.folds)
  # Every reference record finds itself, and only itself.
  assert [one.match(fp) for fp in one.fingerprints] == list(range(len(one)))
  # Near-silent signals (all block means within 0.03 mV of 0) match nothing.
  quiet = np.random.default_rng(0).normal(0, 0.005, (5000, 12)).astype(np.float32)
  assert one.match(leakage.fingerprint(quiet, 500)) is None
  assert one.match(one.fingerprints[0] + 0.005) == 0  # Within tolerance.
  assert one.match(one.fingerprints[0] + np.where(np.arange(600) == 5, 0.02, 0)) is None
  # A copy with a baseline offset on every lead is still a copy.
  record = ptbxl.PTBXL(world["ptbxl"]).read(str(int(one.ecg_ids[0])))
  offset = record.ecg + np.linspace(-0.3, 0.3, 12, dtype=np.float32)
  assert one.match(leakage.fingerprint(offset, 500)) == 0


def test_a_missing_source_folder_stops_before_any_work(world, tmp_path):
  config = _config(world, tmp_path / "out")
  config.data.corpus.samitrop.raw_dir = str(tmp_path / "nowhere")
  with pytest.raises(records.SourceError, match="nowhere"):
    prepare.prepare_from_config(config.data, show_progress=False)
  assert not (tmp_path / "out").exists()
  config.data.corpus.samitrop.weight = 0.0
  config.data.corpus.samitrop.raw_dir = str(world["root"] / "samitrop")
  with pytest.raises(ValueError, match="weight=0.0 must be positive"):
    prepare.prepare_from_config(config.data, show_progress=False)



DX_BY_CLASS = {"NORM": "426783006", "MI": "164865005", "STTC": "164861001",
               "CD": "164909002", "HYP": "164873001"}


def _domain_config(pretrained, sources):
  config, workdir = pretrained
  evaluation = config.evaluation.copy_and_resolve_references()
  evaluation.checkpoint = str(workdir)
  evaluation.update(tasks=("superdiagnostic", "CD", "rhythm"), label_fractions=(1.0,),
                    seeds=(0,), bootstrap=0, robustness=(), reduced_leads=(),
                    random_init_baseline=False, plots=False, num_reconstructions=0,
                    domain_label_fractions=(1.0,), domains=tuple(sources))
  return evaluation


def test_another_hospital_is_probed_within_source_and_with_the_ptbxl_probe(
    pretrained, tmp_path):
  """A CinC-format hospital (SNOMED-CT Dx codes -> superclasses) as a `domain` of the
  PTB-XL probe: its own stored patient split, a within-source probe, and the PTB-XL
  head transferred by class name; no SCP rhythm task outside PTB-XL."""
  from crema_jax.evaluation import run  # pylint: disable=g-import-not-at-top
  classes = list(DX_BY_CLASS)
  for i in range(40):
    digital = np.round(_ecg(200 + i, 10, 500) * 1000)
    _write_challenge(tmp_path / "raw" / "hospital", f"Q{i:04d}", digital, 1000, 500,
                     dx=DX_BY_CLASS[classes[i % 5]])
  data = demo.get_config("test").data
  data.update(source="cinc", name="hospital", raw_dir=str(tmp_path / "raw"),
              data_dir=str(tmp_path / "prepared"), prepare_workers=1)
  data.leakage.ptbxl_dir = ""
  prepare.prepare_from_config(data, show_progress=False)
  results = run.evaluate(
      _domain_config(pretrained, [f"{tmp_path / 'prepared'}:hospital"]),
      tmp_path / "eval")
  source = results["encoders"]["crema_step2"]["domains"]["hospital"]
  assert set(source["tasks"]) == {"superdiagnostic", "CD"}
  assert sum(source["ecgs"].values()) == 40 and min(source["ecgs"].values()) > 0
  assert (tmp_path / "eval" / "domain_splits" / "hospital.json").is_file()
  superdiagnostic = source["tasks"]["superdiagnostic"]
  assert superdiagnostic["classes_matched"] == list(records.SUPERCLASSES)
  assert set(superdiagnostic["within"]) == {"1"}
  for scored in (superdiagnostic["within"]["1"], superdiagnostic["transferred"]):
    assert 0.0 <= scored["auroc"] <= 1.0 and scored["n"] > 0
  assert "## Other sources" in (tmp_path / "eval" / "results.md").read_text()


def test_a_source_too_small_to_split_is_refused_before_any_probe(
    prepared_corpus, pretrained, tmp_path):
  """The corpus's CODE-15% holds 6 ECGs of 4 patients: no train/val/test split."""
  from crema_jax.evaluation import run  # pylint: disable=g-import-not-at-top
  corpus, _ = prepared_corpus
  config = _domain_config(pretrained, [f"{corpus.data.data_dir}:code15"])
  with pytest.raises(ValueError, match=r"code15.*6 ECGs of 4 patients.*empty"):
    run.evaluate(config, tmp_path)
  assert not (tmp_path / "results.json").exists()
