"""A hospital's own labels: a folder of aECG, MUSE and WFDB files with a labels table,
prepared, probed and fine-tuned for a binary, a multi-label, a multi-class and a
regression task, and the classifier folders `predict` uses; every table fault refused
by name before anything is computed."""

import csv
import json

import numpy as np
import pandas as pd
import pytest

import ecg_fixtures  # In tests/integration/, the test's folder.
from configs import labels as labels_configs
from configs import predict as predict_configs
from crema_jax.data import labels_table
from crema_jax.data import prepare
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.data import synthetic
from crema_jax.evaluation import own_labels
from crema_jax.evaluation import run
from crema_jax.evaluation import tasks as tasks_lib
from crema_jax.inference import predict

TASKS = ("binary:low_ef", "dx=multilabel:mi,lvh", "multiclass:rhythm",
         "regression:potassium")
NUM_ECGS = 60


def _folder(root):
  """60 ECGs of 60 patients (synthetic 12-lead, 10 s at 500 Hz), a third each as HL7
  aECG, GE MUSE XML and WFDB, and a labels table of every kind (what is tested is the
  path, not what a 2-step checkpoint can learn)."""
  ecgs = synthetic.draw_ecgs(NUM_ECGS, seed=3)
  rng = np.random.default_rng(0)
  rows = []
  for i, ecg in enumerate(ecgs):
    low_ef = i % 2
    gain = 0.6 if low_ef else 1.4
    ecg = ecg * gain
    if i % 3 == 0:
      name = f"aecg/{i:03d}.xml"
      ecg_fixtures.write_hl7_aecg(root / name, ecg, 500, records.LEADS, f"S{i}")
    elif i % 3 == 1:
      name = f"muse/{i:03d}.xml"
      ecg_fixtures.write_muse_xml(root / name, ecg, 500, records.LEADS, f"S{i}")
    else:
      name = f"wfdb/{i:03d}.hea"
      synthetic._write_wfdb(root, name.removesuffix(".hea"), ecg, 500)  # pylint: disable=protected-access
    rows.append({"file": name, "patient": f"H{i}", "low_ef": low_ef,
                 "mi": int(rng.random() < 0.5), "lvh": ["no", "yes"][i % 4 < 2],
                 "rhythm": ("SR", "AFIB", "SBRAD")[(i // 2) % 3],
                 "potassium": f"{3.5 + gain + rng.normal(0, 0.1):.2f}"})
  (root / "aecg").mkdir(exist_ok=True)
  table = root / "labels.csv"
  pd.DataFrame(rows).to_csv(table, index=False)
  return table


@pytest.fixture(name="labelled", scope="module")
def _labelled(tmp_path_factory):
  """(config for prepare and evaluation, folder, table) of the prepared folder."""
  root = tmp_path_factory.mktemp("hospital")
  for sub in ("aecg", "muse", "wfdb"):
    (root / sub).mkdir()
  table = _folder(root)
  config = labels_configs.get_config("quick")
  config.labels.split_fractions = (0.5, 0.25, 0.25)  # Every rhythm in 15 val ECGs.
  config.data.update(raw_dir=str(root), labels_table=str(table),
                     data_dir=str(tmp_path_factory.mktemp("prepared")),
                     prepare_workers=1)
  manifest = prepare.prepare_from_config(config.data, show_progress=False)
  assert manifest["num_records"] == NUM_ECGS and not manifest["skipped"]
  assert manifest["labels_table"]["records_labelled"] == NUM_ECGS
  return config, root, table


def _evaluation(config, pretrained, **fields):
  pretrain_config, checkpoint = pretrained
  del pretrain_config
  evaluation = config.copy_and_resolve_references()
  evaluation.update({"checkpoint": str(checkpoint), "tasks": TASKS,
                     "label_fractions": (1.0,), "bootstrap": 20, "robustness": (),
                     "random_init_baseline": False, "plots": False,
                     "progress_bar": False, **fields})
  return evaluation


def test_probe_and_lpft_of_every_kind_and_predict(labelled, pretrained, tmp_path):
  config, root, _ = labelled
  evaluation = _evaluation(config, pretrained)
  evaluation.probe.steps = 50
  results = run.evaluate(evaluation, tmp_path / "probe")
  summary = results["encoders"]["crema_step2"]["summary"]["1"]
  for name in ("low_ef", "dx", "rhythm"):
    assert 0 <= summary[name]["auroc"] <= 1
  assert results["tasks"]["rhythm"]["classes"] == ["AFIB", "SBRAD", "SR"]
  assert results["tasks"]["dx"]["classes"] == ["mi", "lvh"]
  assert np.isfinite(summary["potassium"]["mae"])
  assert summary["potassium"]["mae_ci"][0] <= summary["potassium"]["mae"]
  assert {"r2", "pearson_r", "r2_ci"} <= set(summary["potassium"])
  labels = results["dataset"]["labels_table"]
  assert labels["records_labelled"] == NUM_ECGS and not labels["unmatched"]
  # The drawn split: written, patient-disjoint, and read back by the next run.
  split = json.loads((tmp_path / "probe" / own_labels.SPLIT_FILE).read_text())
  assert sum(len(v) for v in split["ecg_id"].values()) == NUM_ECGS
  assert sum(results["tasks"]["potassium"]["ecgs"].values()) == NUM_ECGS

  # The regression classifier's predictions are values near the labels' scale.
  card = json.loads((tmp_path / "probe" / "classifiers" / "potassium" /
                     "model_card.json").read_text())
  assert card["kind"] == "regression" and card["labels"]["path"].endswith("labels.csv")
  out = _predict(tmp_path / "probe" / "classifiers" / "potassium", root, tmp_path / "k")
  assert out[0][2:] == ["predicted_potassium"] and len(out) == NUM_ECGS + 1
  values = np.array([float(r[2]) for r in out[1:]])
  assert np.isfinite(values).all() and 2 < np.median(values) < 7
  out = _predict(tmp_path / "probe" / "classifiers" / "rhythm", root, tmp_path / "r")
  assert out[0][2:] == ["p_AFIB", "p_SBRAD", "p_SR", "predicted_class"]
  probabilities = np.array([[float(v) for v in r[2:5]] for r in out[1:]])
  np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)
  assert {r[5] for r in out[1:]} <= {"AFIB", "SBRAD", "SR"}

  # LP-FT of the multi-class and the regression task: a few steps end to end.
  tuned = _evaluation(config, pretrained, mode="finetune",
                      tasks=("multiclass:rhythm", "regression:potassium"))
  tuned.probe.steps = 25
  tuned.finetune.update(steps=4, eval_every=2, batch_size=8, warmup_steps=1)
  results = run.evaluate(tuned, tmp_path / "finetune")
  runs = results["encoders"]["crema_step2"]["runs"]
  assert np.isfinite(runs["fraction_1/seed_0/potassium"]["val_r2"])
  assert 0 <= runs["fraction_1/seed_0/rhythm"]["auroc"] <= 1
  out = _predict(tmp_path / "finetune" / "classifiers" / "potassium", root,
                 tmp_path / "kf")
  assert np.isfinite([float(r[2]) for r in out[1:]]).all()


def _predict(classifier, folder, workdir):
  config = predict_configs.get_config()
  config.update(checkpoint=str(classifier), input=str(folder), progress_bar=False)
  predict.run(config, workdir)
  with open(workdir / "predictions.csv", newline="") as f:
    return list(csv.reader(f))


def test_split_column_is_used_and_rare_classes_refused(labelled, tmp_path):
  config, _, table = labelled
  frame = pd.read_csv(table, dtype=str, keep_default_na=False)
  frame["split"] = ["train"] * 40 + ["val"] * 8 + ["test"] * 12
  path = tmp_path / "split.csv"
  frame.to_csv(path, index=False)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  tasks, joined = tasks_lib.from_table(("multiclass:rhythm",), prepared, str(path))
  positions = own_labels.positions(joined, prepared, config, tmp_path)
  assert [len(positions[s]) for s in ("train", "val", "test")] == [40, 8, 12]
  assert not (tmp_path / own_labels.SPLIT_FILE).exists()
  # Without a split column: drawn by the table's patients, never separating them.
  frame.drop(columns=["split"]).assign(patient=[f"H{i // 2}" for i in range(60)]).to_csv(
      path, index=False)
  tasks, joined = tasks_lib.from_table(("multiclass:rhythm",), prepared, str(path))
  drawn = own_labels.positions(joined, prepared, config, tmp_path)
  split_of = {int(p): s for s, ps in drawn.items() for p in ps}
  by_patient = {}
  for position, split in split_of.items():
    by_patient.setdefault(int(joined.patients[position]), set()).add(split)
  assert len(by_patient) == 30 and all(len(s) == 1 for s in by_patient.values())
  (tmp_path / own_labels.SPLIT_FILE).unlink()
  frame = pd.read_csv(table, dtype=str, keep_default_na=False).assign(
      split=["train"] * 40 + ["val"] * 8 + ["test"] * 12)
  # A class that only the training split holds cannot be validated or tested.
  frame.loc[:, "rhythm"] = ["SR"] * 58 + ["VT", "VT"]
  frame.loc[58:, "split"] = "train"
  frame.to_csv(path, index=False)
  tasks, joined = tasks_lib.from_table(("multiclass:rhythm",), prepared, str(path))
  positions = own_labels.positions(joined, prepared, config, tmp_path)
  with pytest.raises(ValueError, match=r"class VT: 2 ECGs of 2 patients, too rare"):
    own_labels.check(tasks, positions, joined.patients)


def test_table_faults_are_refused_by_name_before_compute(labelled, pretrained,
                                                         tmp_path):
  config, _, table = labelled
  good = pd.read_csv(table, dtype=str, keep_default_na=False)

  def refused(edit, match, task="regression:potassium"):
    frame = edit(good.copy())
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    evaluation = _evaluation(config, pretrained, tasks=(task,))
    evaluation.labels.table = str(path)
    with pytest.raises(ValueError, match=match):
      run.evaluate(evaluation, tmp_path / "w")
    assert not (tmp_path / "w" / "results.json").exists()

  def duplicate(f):
    f.loc[5, "file"] = f.loc[4, "file"]
    return f
  refused(duplicate, r"row 7 \('muse/004.xml'\): the file is named by an earlier row")
  refused(lambda f: f.assign(potassium=["4.1"] * 59 + ["high"]),
          r"column 'potassium', row 61 \('wfdb/059.hea': 'high'\): not a finite number")
  refused(lambda f: f.assign(low_ef=["1", "maybe"] * 30),
          r"column 'low_ef', rows 3 \('muse/001.xml': 'maybe'\).*not 0/1",
          "binary:low_ef")
  refused(lambda f: f.assign(split=["train", "dev"] * 30),
          r"rows 3 \('muse/001.xml': 'dev'\).*split is not one of")
  refused(lambda f: f.assign(patient=["same"] * 60, split=["train", "test"] * 30),
          r"a patient in more than one split")
  refused(lambda f: f.drop(columns=["potassium"]), r"no column\(s\) \['potassium'\]")
  refused(lambda f: f.assign(file="elsewhere/" + f["file"]), r"no row names a prepared")
  refused(lambda f: f.assign(file=["/abs/x.xml"] + f["file"].tolist()[1:]),
          r"row 2 \('/abs/x.xml'\): not a path inside the folder")

  def partial(f):
    f.loc[0, "mi"] = ""
    return f
  refused(partial, r"row 2 \('aecg/000.xml'\): some of \['mi', 'lvh'\] empty",
          "dx=multilabel:mi,lvh")
  # Rows without a prepared file and files without a row are named, not dropped.
  frame = good.copy()
  frame.loc[0, "file"] = "aecg/missing.xml"
  path = tmp_path / "u.csv"
  frame.to_csv(path, index=False)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  _, joined = tasks_lib.from_table(("binary:low_ef",), prepared, str(path))
  assert joined.unmatched == [
      "row 2 ('aecg/missing.xml'): no such file among the prepared records",
      "'aecg/000.xml': prepared, but no row of the table names it"]


def test_task_specs():
  assert labels_table.TaskSpec.parse("ef=binary:low_ef") == labels_table.TaskSpec(
      "ef", "binary", ("low_ef",))
  assert labels_table.TaskSpec.parse("multilabel:a, b").name == "a+b"
  for bad in ("binary", "ordinal:x", "binary:a,b", "a b=regression:x"):
    with pytest.raises(ValueError, match="KIND|reads one column|name"):
      labels_table.TaskSpec.parse(bad)
  assert labels_table.file_keys("./x/r.hea") == ("x/r.hea", "x/r")
