"""A checkpoint on someone's ECG files: the classifier folders an evaluation writes,
embed and predict over folders of files, and the portable export."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
from pydicom.data import get_testdata_file
import pytest

import ecg_fixtures  # In tests/integration/, the test's folder.
from configs import embed as embed_configs
from configs import export as export_configs
from configs import predict as predict_configs
from crema_jax.data.readers import ecg_files
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import run
from crema_jax.evaluation import scores
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax.inference import embed
from crema_jax.inference import export
from crema_jax.inference import model as model_lib
from crema_jax.inference import predict
from crema_jax.package import classifier
from crema_jax import sharding

DICOM = get_testdata_file("waveform_ecg.dcm")


@pytest.fixture(name="probed", scope="module")
def _probed(pretrained, tmp_path_factory):
  """(evaluation workdir, results) of a one-task probe of the 2-step checkpoint."""
  config, workdir = pretrained
  evaluation = config.evaluation.copy_and_resolve_references()
  evaluation.update(checkpoint=str(workdir), tasks=("superdiagnostic",),
                    label_fractions=(1.0,), seeds=(0,), bootstrap=20, robustness=(),
                    reduced_leads=(), random_init_baseline=False, plots=False,
                    num_reconstructions=0)
  out = tmp_path_factory.mktemp("probe")
  return out, run.evaluate(evaluation, out)


def _wave(seconds: float, rate: float, leads: int, seed: int) -> np.ndarray:
  """[time, leads] mV: a different sum of sines per lead."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate))[:, None] / rate
  freq, phase = rng.uniform(0.8, 8, (2, leads)), rng.uniform(0, 6.28, (2, leads))
  return (0.4 * np.sin(2 * np.pi * freq[0] * t + phase[0]) +
          0.2 * np.sin(2 * np.pi * freq[1] * t + phase[1])).astype(np.float32)


@pytest.fixture(name="hospital")
def _hospital(tmp_path):
  """A hospital's export: the real pydicom 12-lead DICOM ECG, an HL7 aECG and a GE
  MUSE XML (8 leads stored; III, aVR, aVL, aVF derived), a corrupt XML."""
  root = tmp_path / "ecgs"
  for site in ("dicom", "aecg", "muse"):
    (root / site).mkdir(parents=True)
  shutil.copy(DICOM, root / "dicom" / "ecg.dcm")
  ecg_fixtures.write_hl7_aecg(root / "aecg" / "ecg.xml", _wave(10, 500, 12, 1), 500,
                              records.LEADS, "P-17")
  ecg_fixtures.write_muse_xml(root / "muse" / "ecg.xml",
                              _wave(10, 500, 8, 2), 500, ecg_fixtures.MUSE_LEADS,
                              "P-18")
  text = (root / "aecg" / "ecg.xml").read_text()
  (root / "aecg" / "broken.xml").write_text(text[:len(text) // 2])
  return root


KEYS = ["aecg/ecg.xml", "dicom/ecg.dcm", "muse/ecg.xml"]


def _inference_config(get_config, checkpoint, folder, **overrides):
  config = get_config()
  config.checkpoint = str(checkpoint)
  if "input" in config:
    config.input = str(folder)
  config.update({"progress_bar": False, "read_workers": 0, "batch_size": 4,
                 **overrides})
  return config


def test_a_probe_writes_a_classifier_with_its_model_card(probed, pretrained):
  out, results = probed
  folder = out / "classifiers" / "superdiagnostic"
  spec = json.loads((folder / "classifier.json").read_text())
  card = json.loads((folder / "model_card.json").read_text())
  classes = results["tasks"]["superdiagnostic"]["classes"]
  # Self-contained: the probe's encoder is in the folder, not named by path.
  assert spec["classes"] == classes and spec["encoder"]["fine_tuned"] is False
  assert (folder / "encoder").is_dir() and spec["provenance"]["leakage"] == results[
      "leakage"]
  assert [label["name"] for label in card["outputs"]["labels"]] == classes
  test = results["encoders"]["crema_step2"]["runs"]["fraction_1/seed_0/superdiagnostic"]
  # (The 8-ECG test fold of this tiny set may leave the AUROC undefined: NaN.)
  np.testing.assert_equal(card["evaluation"]["test"]["auroc"], test["auroc"])
  np.testing.assert_equal(card["evaluation"]["test"]["per_class"], test["per_class"])
  assert card["preprocessing"]["sampling_rate_hz"] == pretrained[0].data.sampling_rate
  assert card["leakage"] == results["leakage"]
  assert "## Outputs" in (folder / "MODEL_CARD.md").read_text()
  # The classifier computes what the evaluation scored: on the test ECGs the task
  # keeps, its probabilities rank and its decisions split them as the probe's logits
  # and thresholds did (same per-class AUROC and F1).
  mesh = sharding.make_mesh()
  found = classifier.load(folder, mesh)
  config = pretrained[0]
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  task = tasks_lib.build(("superdiagnostic",), prepared)["superdiagnostic"]
  positions = storage.fold_positions(prepared, config.data.test_folds)
  positions = positions[task.rows(positions)]
  raw = next(iter(_raw_views(found.config, prepared, positions)))
  classify = jax.jit(model_lib.classify_fn(found.model, found.preprocessing.normalize))
  _, probabilities = model_lib.apply_sharded(classify, found.params, raw, mesh,
                                             model_lib.global_batch_size(
                                                 len(positions), mesh))
  again = scores.score_task(task.labels[positions], probabilities, found.thresholds,
                            task.classes)
  for name in task.classes:
    for metric in ("auroc", "f1"):
      np.testing.assert_allclose(again["per_class"][name][metric],
                                 test["per_class"][name][metric], atol=1e-6,
                                 err_msg=f"{name} {metric}")


def _raw_views(config, prepared, positions):
  """Unnormalised eval views (what a file reader hands `classify`)."""
  from crema_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.eval_dataset(config, prepared, (), len(positions),
                               positions=positions)


def test_embed_a_hospital_folder_skips_the_corrupt_file(probed, hospital, tmp_path):
  checkpoint = probed[0] / "classifiers" / "superdiagnostic"
  config = _inference_config(embed_configs.get_config, checkpoint, hospital,
                             read_workers=2, batch_size=2)
  summary = embed.run(config, tmp_path / "embed")
  assert summary["ecgs"] == 3 and summary["skipped"] == 1
  skipped = json.loads((tmp_path / "embed" / "skipped.json").read_text())
  assert skipped[0]["key"] == "aecg/broken.xml" and "broken.xml" in skipped[0]["path"]
  with np.load(tmp_path / "embed" / "embeddings.npz") as saved:
    assert list(saved["key"]) == KEYS
    features = saved["features"]
  # Each is the encoder's features of the record as the reader reads it, cast as
  # stored and standardised by the evaluation's own path.
  found = classifier.load(checkpoint, sharding.make_mesh())
  pre = found.preprocessing
  source = ecg_files.ECGFiles(hospital, sampling_rate=pre.sampling_rate,
                              derive_limb_leads=True)
  for key, got in zip(KEYS, features):
    x = source.read(key).ecg.astype(np.float16).astype(np.float32)[:pre.seq_len].T[None]
    valid = np.array([x.shape[2]], np.int32)
    x = np.pad(x, ((0, 0), (0, 0), (0, pre.seq_len - x.shape[2])))
    expected = features_lib.embed(found.model, found.params["crema"],
                                  features_lib.standardize_batch(x, valid), valid)
    np.testing.assert_allclose(got, np.asarray(expected)[0], rtol=2e-4, atol=2e-4,
                               err_msg=key)


def test_embed_a_two_lead_holter_in_windows(probed, shared_data, tmp_path):
  """MIT-BIH record 100 (MLII, V5; 30 min at 360 Hz): 10 s windows at the
  checkpoint's rate, its two leads in their places and the other ten zeroed."""
  (tmp_path / "holter").mkdir()
  for suffix in (".hea", ".dat", ".atr"):
    shutil.copy(shared_data / "mitdb" / f"100{suffix}", tmp_path / "holter")
  config = _inference_config(embed_configs.get_config, probed[0] / "classifiers" /
                             "superdiagnostic", tmp_path / "holter",
                             input_leads=("II", "V5"), lead_aliases="MLII=II",
                             batch_size=32)
  summary = embed.run(config, tmp_path / "embed")
  assert summary["ecgs"] == 180 and summary["skipped"] == 0
  with np.load(tmp_path / "embed" / "embeddings.npz") as saved:
    assert saved["key"][90] == "100.hea#w90" and saved["features"].shape[0] == 180
    assert saved["start_seconds"][90] == 900.0 and set(saved["seconds"]) == {10.0}
    assert np.isfinite(saved["features"]).all()
    assert len({tuple(np.round(f, 4)) for f in saved["features"][:5]}) == 5
  config.input_leads = ("II", "aVX")
  with pytest.raises(ValueError, match="aVX"):
    embed.run(config, tmp_path / "refused")


def test_predict_writes_named_probabilities_and_thresholded_decisions(
    probed, hospital, tmp_path):
  checkpoint = probed[0] / "classifiers" / "superdiagnostic"
  config = _inference_config(predict_configs.get_config, checkpoint, hospital)
  summary = predict.run(config, tmp_path / "predict")
  found = classifier.load(checkpoint, sharding.make_mesh())
  with open(tmp_path / "predict" / "predictions.csv", newline="") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == (["key", "file"] + [f"p_{c}" for c in found.classes] +
                            list(found.classes))
  assert [row["key"] for row in table] == KEYS
  for row in table:
    for name, threshold in zip(found.classes, found.thresholds):
      assert int(row[name]) == int(float(row[f"p_{name}"]) >= threshold)
  assert summary["skipped"] == 1
  assert (tmp_path / "predict" / "MODEL_CARD.md").is_file()


def test_predict_refuses_a_pretraining_checkpoint(pretrained, hospital, tmp_path):
  config = _inference_config(predict_configs.get_config, pretrained[1], hospital)
  with pytest.raises(ValueError, match="not a classifier folder"):
    predict.run(config, tmp_path)


def test_bad_inference_configs_are_refused(pretrained, tmp_path):
  config = _inference_config(embed_configs.get_config, tmp_path / "nothing",
                             tmp_path / "missing", batch_size=0)
  with pytest.raises(ValueError) as error:
    embed.run(config, tmp_path / "out")
  message = str(error.value)
  for part in ("neither a pretraining workdir", "is not a folder", "batch_size=0"):
    assert part in message
  assert not (tmp_path / "out").exists()


def test_export_runs_without_the_package(probed, tmp_path):
  """The classifier's export, loaded in a process that cannot import crema_jax,
  gives what the classifier gives here, at another batch size than any traced."""
  checkpoint = probed[0] / "classifiers" / "superdiagnostic"
  config = _inference_config(export_configs.get_config, checkpoint, None)
  summary = export.run(config, tmp_path / "export")
  assert set(summary["files"]) == {"encoder.jax", "classifier.jax", "MODEL_CARD.md",
                                   "model_card.json"}
  assert summary["platforms"] == ["cpu", "cuda"]
  found = classifier.load(checkpoint, sharding.make_mesh())
  pre = found.preprocessing
  rng = np.random.default_rng(0)
  x = rng.normal(0, 0.3, (3, len(pre.leads), pre.seq_len)).astype(np.float32)
  valid = np.array([pre.seq_len, pre.seq_len // 2, pre.seq_len], np.int32)
  np.savez(tmp_path / "input.npz", x=x, valid=valid)
  script = textwrap.dedent(f"""
      import importlib.abc, sys
      class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
          if name.split(".")[0] in ("crema_jax", "configs", "flax", "optax"):
            raise ImportError("not available here: " + name)
      sys.meta_path.insert(0, Refuse())
      import jax, numpy as np
      try:
        import crema_jax
        sys.exit("crema_jax is importable")
      except ImportError:
        pass
      data = np.load({str(tmp_path / "input.npz")!r})
      fn = jax.export.deserialize(bytearray(open(
          {str(tmp_path / "export" / "classifier.jax")!r}, "rb").read()))
      features, probabilities = fn.call(data["x"], data["valid"])
      np.savez({str(tmp_path / "output.npz")!r}, features=features,
               probabilities=probabilities)
  """)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["XLA_FLAGS"] = ""
  subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env,
                 timeout=300)
  classify = jax.jit(model_lib.classify_fn(found.model, pre.normalize))
  feats, probs = model_lib.apply_sharded(classify, found.params,
                                         {"view": x, "valid": valid},
                                         sharding.make_mesh(), 8)
  with np.load(tmp_path / "output.npz") as out:
    np.testing.assert_allclose(out["features"], feats, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["probabilities"], probs, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ packages
def _copy_alone(folder, tmp_path):
  """`folder` copied to another path, as a user's download would be."""
  target = tmp_path / "downloaded" / folder.name
  shutil.copytree(folder, target)
  return target


@pytest.fixture(name="no_training_data")
def _no_training_data(monkeypatch):
  """Any read of a prepared dataset fails: the package must carry what it needs."""
  def refuse(self, *args, **kwargs):
    raise AssertionError(f"the training data was read: {args}")
  monkeypatch.setattr(storage.PreparedSource, "__init__", refuse)


def test_a_package_copied_alone_embeds_and_predicts_as_the_original(
    probed, pretrained, hospital, tmp_path, no_training_data):
  """A classifier folder and a pretraining workdir, each copied alone elsewhere,
  without their training data: the same features and predictions; a file whose name
  is a spreadsheet formula is a plain text cell."""
  original = probed[0] / "classifiers" / "superdiagnostic"
  shutil.copy(hospital / "dicom" / "ecg.dcm", hospital / "=HYPERLINK(1).dcm")
  copy = _copy_alone(original, tmp_path)
  workdir = _copy_alone(pretrained[1], tmp_path)
  out = {}
  for name, checkpoint in (("original", original), ("copy", copy),
                           ("checkpoint", workdir)):
    config = _inference_config(embed_configs.get_config, checkpoint, hospital)
    summary = embed.run(config, tmp_path / name)
    assert summary["encoder"]["verified"] == "ok"
    with np.load(tmp_path / name / "embeddings.npz") as saved:
      out[name] = dict(saved)
  np.testing.assert_array_equal(out["copy"]["features"], out["original"]["features"])
  np.testing.assert_array_equal(out["copy"]["key"], out["original"]["key"])
  # A probe's classifier holds its checkpoint's encoder unchanged.
  np.testing.assert_allclose(out["checkpoint"]["features"],
                             out["original"]["features"], rtol=1e-6)
  tables = {}
  for name, checkpoint in (("original", original), ("copy", copy)):
    config = _inference_config(predict_configs.get_config, checkpoint, hospital)
    predict.run(config, tmp_path / f"predict_{name}")
    tables[name] = (tmp_path / f"predict_{name}" / "predictions.csv").read_text()
  assert tables["copy"] == tables["original"]
  assert "\n'=HYPERLINK(1).dcm," in tables["copy"]


def test_a_damaged_package_is_named_and_refused(probed, pretrained, hospital,
                                                tmp_path):
  from configs import verify as verify_configs  # pylint: disable=g-import-not-at-top
  from crema_jax.package import manifest  # pylint: disable=g-import-not-at-top
  from crema_jax.package import verify  # pylint: disable=g-import-not-at-top
  copy = _copy_alone(probed[0] / "classifiers" / "superdiagnostic", tmp_path)
  config = verify_configs.get_config()
  config.checkpoint = str(copy)
  assert verify.run(config, tmp_path / "ok")["ok"]
  # One flipped bit in the largest parameter file.
  target = max((p for p in (copy / "encoder").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 1
  target.write_bytes(bytes(data))
  name = target.relative_to(copy).as_posix()
  with pytest.raises(SystemExit, match=f"{name}: damaged"):
    verify.run(config, tmp_path / "verify")
  with pytest.raises(manifest.PackageError, match=f"{name}: damaged"):
    embed.run(_inference_config(embed_configs.get_config, copy, hospital),
              tmp_path / "embed")
  assert not (tmp_path / "embed" / "embeddings.npz").exists()
  # A pretraining checkpoint: each step is its own package.
  workdir = _copy_alone(pretrained[1], tmp_path)
  config.checkpoint = str(workdir)
  assert [p["status"] for p in verify.run(config, tmp_path / "steps")["packages"]] == [
      "ok"]
  (workdir / "checkpoints" / "2" / "config" / "metadata").write_text("{")
  with pytest.raises(SystemExit, match="config/metadata: damaged"):
    verify.run(config, tmp_path / "steps")


def test_non_finite_parameters_are_refused(probed, hospital, tmp_path):
  from crema_jax.package import manifest  # pylint: disable=g-import-not-at-top
  folder = probed[0] / "classifiers" / "superdiagnostic"
  found = classifier.load(folder, sharding.make_mesh())
  spec = found.spec
  poisoned = jax.tree.map(lambda x: np.asarray(x) * np.nan, found.encoder.params)
  copy = classifier.save(tmp_path / "nan", task=spec["task"], classes=found.classes,
                         thresholds=found.thresholds, head=(found.head["w"],
                                                            found.head["b"]),
                         config=found.config, encoder_params=poisoned,
                         encoder=found.encoder, fine_tuned=True,
                         card=json.loads((folder / "model_card.json").read_text()))
  with pytest.raises(manifest.PackageError, match="non-finite parameters"):
    predict.run(_inference_config(predict_configs.get_config, copy, hospital),
                tmp_path / "predict")
  assert not (tmp_path / "predict" / "predictions.csv").exists()


def test_a_workdir_of_another_run_is_refused(probed, hospital, tmp_path):
  checkpoint = probed[0] / "classifiers" / "superdiagnostic"
  config = _inference_config(embed_configs.get_config, checkpoint, hospital)
  embed.run(config, tmp_path / "out")
  before = (tmp_path / "out" / "embeddings.npz").read_bytes()
  other = tmp_path / "other"
  shutil.copytree(hospital / "muse", other)
  config.input = str(other)
  with pytest.raises(FileExistsError, match="input: .*ecgs.* there, .*other.* now"):
    embed.run(config, tmp_path / "out")
  assert (tmp_path / "out" / "embeddings.npz").read_bytes() == before
  config.overwrite = True
  assert embed.run(config, tmp_path / "out")["ecgs"] == 1


def test_a_folder_with_no_readable_file_fails_naming_the_reasons(probed, hospital,
                                                                 tmp_path):
  checkpoint = probed[0] / "classifiers" / "superdiagnostic"
  broken = tmp_path / "broken"
  broken.mkdir()
  shutil.copy(hospital / "aecg" / "broken.xml", broken / "a.xml")
  config = _inference_config(embed_configs.get_config, checkpoint, broken)
  with pytest.raises(ValueError, match=r"none of its 1 file\(s\) could be read"):
    embed.run(config, tmp_path / "out")
  assert not (tmp_path / "out" / "embeddings.npz").exists()


def test_a_killed_embed_keeps_the_last_outputs_and_resumes_to_the_same(
    probed, hospital, tmp_path):
  """Killed (SIGKILL) once its first part is written: the previous outputs are
  untouched; the same command again resumes and ends with what an uninterrupted run
  wrote."""
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  checkpoint = probed[0] / "classifiers" / "superdiagnostic"
  config = _inference_config(embed_configs.get_config, checkpoint, hospital,
                             part_files=1, read_workers=1)
  workdir = tmp_path / "out"
  embed.run(config, workdir)
  previous = {n: (workdir / n).read_bytes() for n in ("embeddings.npz", "embed.json",
                                                      "skipped.json")}
  command = [sys.executable, "-m", "crema_jax.main", "--config",
             "configs/embed.py", "--workdir", str(workdir),
             f"--config.checkpoint={checkpoint}", f"--config.input={hospital}",
             "--config.part_files=1", "--config.read_workers=1",
             "--config.batch_size=4", "--config.progress_bar=False"]
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  process = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
  first = workdir / embed.PARTS / "part_00000.npz"
  deadline = time.time() + 300
  try:
    while time.time() < deadline and process.poll() is None and not first.exists():
      time.sleep(0.05)
    assert process.poll() is None, "the embed ended before it could be killed"
  finally:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
  done = sorted(p.name for p in (workdir / embed.PARTS).glob("part_*.npz"))
  assert done and len(done) < 4  # Killed part-way.
  for name, content in previous.items():
    assert (workdir / name).read_bytes() == content, name
  summary = embed.run(config, workdir)
  assert summary["resumed_parts"] == len(done)  # Not embedded again.
  assert not (workdir / embed.PARTS).exists()
  with np.load(io.BytesIO(previous["embeddings.npz"])) as old, \
      np.load(workdir / "embeddings.npz") as new:
    assert old.files == new.files
    for key in old.files:
      np.testing.assert_array_equal(new[key], old[key], err_msg=key)
  assert (workdir / "skipped.json").read_bytes() == previous["skipped.json"]
  assert summary["ecgs"] == 3
