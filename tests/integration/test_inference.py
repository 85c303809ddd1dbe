"""A checkpoint on someone's ECG files: the classifier folders an evaluation writes,
embed and predict over folders of files, and the portable export."""

import csv
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

from configs import embed as embed_configs
from configs import export as export_configs
from configs import predict as predict_configs
from crema_jax.data.readers import dicom
from crema_jax.data import storage
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import run
from crema_jax.inference import classifier
from crema_jax.inference import embed
from crema_jax.inference import export
from crema_jax.inference import model as model_lib
from crema_jax.inference import predict
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


@pytest.fixture(name="dicom_folder")
def _dicom_folder(tmp_path):
  """The real pydicom 12-lead ECG twice (two sites) and a corrupt .dcm."""
  for site in ("a", "b"):
    (tmp_path / "ecgs" / site).mkdir(parents=True)
    shutil.copy(DICOM, tmp_path / "ecgs" / site / "ecg.dcm")
  (tmp_path / "ecgs" / "b" / "broken.dcm").write_bytes(b"DICM" + bytes(300))
  return tmp_path / "ecgs"


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
  assert spec["classes"] == classes and "checkpoint" in spec["encoder"]
  assert [label["name"] for label in card["outputs"]["labels"]] == classes
  test = results["encoders"]["crema_step2"]["runs"]["fraction_1/seed_0/superdiagnostic"]
  # (The 8-ECG test fold of this tiny set may leave the AUROC undefined: NaN.)
  np.testing.assert_equal(card["evaluation"]["test"]["auroc"], test["auroc"])
  np.testing.assert_equal(card["evaluation"]["test"]["per_class"], test["per_class"])
  assert card["preprocessing"]["sampling_rate_hz"] == pretrained[0].data.sampling_rate
  assert card["leakage"] == results["leakage"]
  assert "## Outputs" in (folder / "MODEL_CARD.md").read_text()
  # The classifier computes what the evaluation scored: its features are the probe's
  # test features and its probabilities the sigmoid of the probe's logits.
  mesh = sharding.make_mesh()
  found = classifier.load(folder, mesh)
  config = pretrained[0]
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  test_positions = storage.fold_positions(prepared, config.data.test_folds)
  batch = next(features_lib.views(found.config, prepared, (), 8,
                                  positions=test_positions[:8]))
  raw = next(iter(_raw_views(found.config, prepared, test_positions[:8])))
  classify = jax.jit(model_lib.classify_fn(found.model, found.preprocessing.normalize))
  feats, probs = model_lib.apply_sharded(classify, found.params, raw, mesh, 8)
  with np.load(out / "embeddings.npz") as saved:
    np.testing.assert_allclose(feats, saved["test_features"][:8], rtol=2e-4, atol=2e-4)
  expected = features_lib.embed(found.model, found.params["crema"],
                                jax.numpy.asarray(batch["view"]),
                                jax.numpy.asarray(batch["valid"]))
  logits = np.asarray(expected) @ found.params["head"]["w"] + found.params["head"]["b"]
  np.testing.assert_allclose(probs, 1 / (1 + np.exp(-np.asarray(logits))), atol=1e-5)


def _raw_views(config, prepared, positions):
  """Unnormalised eval views (what a file reader hands `classify`)."""
  from crema_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.eval_dataset(config, prepared, (), len(positions),
                               positions=positions)


def test_embed_a_dicom_folder_skips_the_corrupt_file(probed, dicom_folder, tmp_path):
  checkpoint = probed[0] / "classifiers" / "superdiagnostic"
  config = _inference_config(embed_configs.get_config, checkpoint, dicom_folder,
                             input_source="dicom", read_workers=2, batch_size=1)
  summary = embed.run(config, tmp_path / "embed")
  assert summary["ecgs"] == 2 and summary["skipped"] == 1
  skipped = json.loads((tmp_path / "embed" / "skipped.json").read_text())
  assert skipped[0]["key"] == "b/broken.dcm" and skipped[0]["reason"]
  with np.load(tmp_path / "embed" / "embeddings.npz") as saved:
    assert list(saved["key"]) == ["a/ecg.dcm", "b/ecg.dcm"]
    features = saved["features"]
  # The same file: the same features; and they are the encoder's on the record as the
  # DICOM reader reads it, standardised by the evaluation's own path.
  np.testing.assert_allclose(features[0], features[1], rtol=1e-6)
  found = classifier.load(checkpoint, sharding.make_mesh())
  pre = found.preprocessing
  record = dicom.DicomECG(dicom_folder, sampling_rate=pre.sampling_rate).read(
      "a/ecg.dcm")
  x = record.ecg.astype(np.float16).astype(np.float32)[None, :pre.seq_len]
  valid = np.array([x.shape[1]], np.int32)
  x = np.pad(x, ((0, 0), (0, pre.seq_len - x.shape[1]), (0, 0)))
  x = features_lib.standardize_batch(x, valid)
  expected = features_lib.embed(found.model, found.params["crema"], x, valid)
  np.testing.assert_allclose(features[0], np.asarray(expected)[0], rtol=2e-4,
                             atol=2e-4)


def test_predict_writes_named_probabilities_and_thresholded_decisions(
    probed, dicom_folder, tmp_path):
  checkpoint = probed[0] / "classifiers" / "superdiagnostic"
  config = _inference_config(predict_configs.get_config, checkpoint, dicom_folder,
                             input_source="dicom")
  summary = predict.run(config, tmp_path / "predict")
  found = classifier.load(checkpoint, sharding.make_mesh())
  with open(tmp_path / "predict" / "predictions.csv", newline="") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == (["key", "file"] + [f"p_{c}" for c in found.classes] +
                            list(found.classes))
  assert [row["key"] for row in table] == ["a/ecg.dcm", "b/ecg.dcm"]
  for row in table:
    for name, threshold in zip(found.classes, found.thresholds):
      assert int(row[name]) == int(float(row[f"p_{name}"]) >= threshold)
  assert summary["skipped"] == 1
  assert (tmp_path / "predict" / "MODEL_CARD.md").is_file()


def test_predict_refuses_a_pretraining_checkpoint(pretrained, dicom_folder, tmp_path):
  config = _inference_config(predict_configs.get_config, pretrained[1], dicom_folder)
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
  assert set(summary["files"]) == {"encoder.jax", "classifier.jax"}
  assert summary["platforms"] == ["cpu", "cuda"]
  found = classifier.load(checkpoint, sharding.make_mesh())
  pre = found.preprocessing
  rng = np.random.default_rng(0)
  x = rng.normal(0, 0.3, (3, pre.seq_len, len(pre.leads))).astype(np.float32)
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
