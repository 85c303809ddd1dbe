"""PTB-XL evaluation: metrics on hand-checked cases, label fractions by patient, each
robustness shift on a known signal, and probing / fine-tuning a pretrained checkpoint."""

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from crema_jax import evaluate
from crema_jax import models
from crema_jax import sharding
from crema_jax import train
from crema_jax.data import leakage
from crema_jax.data import pipeline
from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.evaluation import features as features_lib
from crema_jax.evaluation import finetune
from crema_jax.evaluation import linear_probe
from crema_jax.evaluation import scores
from crema_jax.evaluation import shifts
from crema_jax.evaluation import splits

# ------------------------------------------------------------------------ scores
LABELS = np.array([[0], [0], [1], [1]])
SCORES = np.array([[0.1], [0.4], [0.35], [0.8]])


def test_auroc_and_auprc_on_a_hand_computed_case():
  # Positive/negative pairs ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4) = 3 of 4.
  np.testing.assert_allclose(scores.auroc_per_class(LABELS, SCORES), [0.75])
  # Ranked 0.8(+), 0.4(-), 0.35(+), 0.1(-): precision 1 at recall .5, 2/3 at recall 1.
  np.testing.assert_allclose(scores.auprc_per_class(LABELS, SCORES), [(1 + 2 / 3) / 2])
  assert np.isnan(scores.auroc_per_class(np.zeros((4, 1)), SCORES)[0])


def test_f1_threshold_is_chosen_to_maximise_f1():
  # Threshold 0.35: predicts 0.4, 0.35, 0.8 positive: TP 2, FP 1, FN 0 -> F1 = 0.8.
  # Threshold 0.8: TP 1, FN 1 -> F1 = 2/3. Threshold 0.4: TP 1, FP 1, FN 1 -> 0.5.
  thresholds = scores.best_f1_thresholds(LABELS, SCORES)
  np.testing.assert_allclose(thresholds, [0.35])
  np.testing.assert_allclose(scores.f1_per_class(LABELS, SCORES, thresholds), [0.8])
  np.testing.assert_allclose(scores.f1_per_class(LABELS, SCORES, np.array([0.8])),
                             [2 / 3])


def test_bootstrap_interval_brackets_the_value_and_narrows_with_more_data():
  rng = np.random.default_rng(0)

  def interval(n):
    labels = rng.integers(0, 2, (n, 1))
    noisy = labels + rng.normal(0, 1.0, (n, 1))
    result = scores.score_task(labels, noisy, np.array([0.5]), ("X",), bootstrap=200)
    low, high = result["auroc_ci"]
    assert low <= result["auroc"] <= high
    return high - low

  assert interval(2000) < interval(100) / 2
  # A perfect classifier: every resample with both classes has AUROC 1.
  perfect = scores.score_task(LABELS, SCORES * 0 + LABELS, np.array([0.5]), ("X",),
                              bootstrap=100)
  assert perfect["auroc_ci"] == [1.0, 1.0]


# ---------------------------------------------------------------- label fractions
def test_label_fraction_takes_whole_patients():
  patients = np.repeat(np.arange(100), np.arange(100) % 4 + 1)  # 1-4 ECGs each.
  for fraction in (0.01, 0.1, 0.5):
    rows = splits.fraction_by_patient(patients, fraction, seed=3)
    chosen = set(patients[rows])
    # Every ECG of a chosen patient is in; none of another patient.
    np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(np.isin(patients,
                                                                          list(chosen))))
    target = round(fraction * len(patients))
    assert target <= len(rows) < target + 4  # Stops at the first patient past it.
  assert len(splits.fraction_by_patient(patients, 1.0, 0)) == len(patients)
  a, b = (splits.fraction_by_patient(patients, 0.1, s) for s in (0, 1))
  assert set(patients[a]) != set(patients[b])  # Seeds draw different patients.
  with pytest.raises(ValueError, match="not in"):
    splits.fraction_by_patient(patients, 0.0, 0)


# ----------------------------------------------------------------------- shifts
RATE = 500


def _sine(hz=5.0, seconds=4.0, amplitude=1.0):
  t = np.arange(int(seconds * RATE)) / RATE
  return np.repeat((amplitude * np.sin(2 * np.pi * hz * t))[:, None], 12,
                   1).astype(np.float32)


def _rng():
  return np.random.default_rng(0)


def test_noise_shift_has_the_requested_snr():
  x = _sine()
  for name, snr in (("noise_snr20", 20), ("noise_snr10", 10), ("noise_snr0", 0)):
    noise = shifts.SHIFTS[name](x, RATE, _rng()) - x
    measured = 10 * np.log10(x.var(0) / noise.var(0))
    np.testing.assert_allclose(measured, snr, atol=0.3)


def test_wander_and_powerline_add_a_sinusoid_of_the_stated_frequency_and_amplitude():
  x = np.zeros((RATE * 10, 12), np.float32)
  for name, hz, amplitude in (("baseline_wander_0.5mv", 0.3, 0.5),
                              ("powerline_50hz_0.2mv", 50, 0.2),
                              ("powerline_60hz_0.2mv", 60, 0.2)):
    added = shifts.SHIFTS[name](x, RATE, _rng())
    spectrum = np.abs(np.fft.rfft(added[:, 0]))
    freqs = np.fft.rfftfreq(len(added), 1 / RATE)
    assert abs(freqs[np.argmax(spectrum)] - hz) < 0.11
    # Whole cycles: a sinusoid's RMS is its amplitude / sqrt(2).
    np.testing.assert_allclose(added.std(0) * np.sqrt(2), amplitude, rtol=0.01)


def test_lead_shifts_keep_only_their_leads():
  x = _sine() + np.arange(12, dtype=np.float32)
  limb = shifts.SHIFTS["limb_leads_only"](x, RATE, _rng())
  np.testing.assert_array_equal(limb[:, :6], x[:, :6])
  assert not limb[:, 6:].any()
  lead_i = shifts.SHIFTS["lead_I_only"](x, RATE, _rng())
  np.testing.assert_array_equal(lead_i[:, 0], x[:, 0])
  assert not lead_i[:, 1:].any()


def test_amplitude_and_rate_shifts():
  x = _sine(hz=5.0)
  np.testing.assert_allclose(shifts.SHIFTS["amplitude_x2"](x, RATE, _rng()), 2 * x)
  np.testing.assert_allclose(shifts.SHIFTS["amplitude_x0.5"](x, RATE, _rng()), x / 2)
  # A 5 Hz wave survives a 100 Hz device; a 70 Hz one (above 50 Hz Nyquist) does not.
  slow = shifts.SHIFTS["rate_100hz"](x, RATE, _rng())
  assert slow.shape == x.shape
  np.testing.assert_allclose(slow[RATE:-RATE], x[RATE:-RATE], atol=0.05)
  fast = shifts.SHIFTS["rate_100hz"](_sine(hz=70.0), RATE, _rng())
  assert np.abs(fast[RATE:-RATE]).max() < 0.05
  with pytest.raises(ValueError, match="unknown robustness shift"):
    shifts.check_names(["noise_snr10", "snow"])


# ------------------------------------------------------------------ linear probe
def test_linear_probe_learns_a_separable_task():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=(400, 5)).astype(np.float32)
  feats = rng.standard_normal((400, 16)) + 2.0 * labels @ rng.standard_normal((5, 16))
  probe = linear_probe.train_linear_probe(feats[:300], labels[:300], feats[300:350],
                                          labels[300:350], steps=200)
  auroc = scores.auroc_per_class(labels[350:], probe.logits(feats[350:]))
  assert auroc.min() > 0.9 and probe.val_auroc > 0.9
  assert probe.thresholds.shape == (5,)


def test_layer_wise_lr_decay_multipliers():
  params = {"crema": {"patch_embed": {"k": 0}, "encoder": {"block0": {"k": 0},
                                                           "block1": {"k": 0},
                                                           "norm": {"k": 0}},
                      "decoder": {"k": 0}, "projector": {"k": 0}},
            "head": {"w": 0}}
  m = finetune.lr_multipliers(params, depth=2, layer_decay=0.5)
  assert m["head"]["w"] == 1.0 and m["crema"]["encoder"]["norm"]["k"] == 1.0
  assert m["crema"]["encoder"]["block1"]["k"] == 0.5
  assert m["crema"]["encoder"]["block0"]["k"] == 0.25
  assert m["crema"]["patch_embed"]["k"] == 0.125
  assert m["crema"]["decoder"]["k"] == 0.0 and m["crema"]["projector"]["k"] == 0.0


# ------------------------------------------------------- from a pretraining run
def _eval_config(config: ml_collections.ConfigDict, workdir, **overrides):
  evaluation = config.evaluation.copy_and_resolve_references()
  evaluation.checkpoint = str(workdir)
  for key, value in overrides.items():
    evaluation[key] = value
  return evaluation


def test_restored_encoder_is_the_trained_one(pretrained):
  config, workdir = pretrained
  mesh = sharding.make_mesh()
  pretrain, model, step, params = evaluate.restore_encoder(
      _eval_config(config, workdir), mesh)
  assert step == 2 and pretrain.model.emb_dim == config.model.emb_dim
  _, state_params = train.restore_params(config, workdir, mesh)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state_params)):
    np.testing.assert_array_equal(a, b)
  fresh = models.init_params(model, jax.random.key(config.seed), config.mask_ratio)
  assert any(not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(params), jax.tree.leaves(fresh)))


def test_features_cover_each_record_of_the_folds_once(pretrained):
  config, workdir = pretrained
  mesh = sharding.make_mesh()
  pretrain, model, _, params = evaluate.restore_encoder(_eval_config(config, workdir),
                                                        mesh)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  out = features_lib.extract_features(model, params, pretrain, prepared, (9, 10), mesh,
                                      batch_size=12)
  positions = pipeline.select(prepared, (9, 10))
  np.testing.assert_array_equal(out["position"], positions)
  np.testing.assert_array_equal(out["ecg_id"], prepared.index["ecg_id"][positions])
  assert out["features"].shape == (len(positions), config.model.emb_dim)
  # The same ECGs through the normalising eval pipeline and model.embed, unbatched.
  first = next(iter(pipeline.eval_dataset(pretrain, prepared, (9, 10), 3)))
  direct = model.apply({"params": params}, first["view"], method=model.embed)
  np.testing.assert_allclose(out["features"][:3], direct, rtol=1e-4, atol=1e-5)


def test_bad_evaluation_configs_are_refused(pretrained, tmp_path):
  config, workdir = pretrained
  cases = {"tasks": (("MI", "AFIB"), "tasks="),
           "label_fractions": ((0.0,), "label_fractions="),
           "robustness": (("snow",), "unknown robustness shift"),
           "mode": ("zero_shot", "mode="),
           "checkpoint": (str(tmp_path), "no checkpoints/ folder")}
  for key, (value, message) in cases.items():
    with pytest.raises(ValueError, match=message):
      evaluate.evaluate(_eval_config(config, workdir, **{key: value}), tmp_path / "out")
  with pytest.raises(ValueError, match="no CLS token"):
    evaluate.evaluate(_eval_config(config, workdir, pool="cls"), tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_probe_writes_results_tables_and_figures(pretrained, tmp_path):
  config, workdir = pretrained
  evaluation = _eval_config(config, workdir)
  results = evaluate.evaluate(evaluation, tmp_path)
  assert set(results["encoders"]) == {"crema_step2", "random_init"}
  for name, encoder in results["encoders"].items():
    assert set(encoder["summary"]) == {"1", "0.5"}
    for task in evaluation.tasks:
      run = encoder["runs"][f"fraction_1/seed_0/{task}"]
      assert 0 <= run["auroc"] <= 1 or np.isnan(run["auroc"])
      assert "auroc_ci" in run and "f1" in run
    assert set(encoder["robustness"]) == set(evaluation.robustness)
    # Half the training ECGs, by patient.
    half = encoder["runs"]["fraction_0.5/seed_0/MI"]["train_ecgs"]
    full = encoder["runs"]["fraction_1/seed_0/MI"]["train_ecgs"]
    assert full / 2 <= half < full
  for name in ("results.json", "results.md", "roc_curves.png", "reconstructions.png",
               "embeddings_pca.png", "embeddings.npz", "pretraining_loss.png"):
    assert (tmp_path / name).is_file(), name
  assert json.loads((tmp_path / "results.json").read_text())["step"] == 2
  table = (tmp_path / "results.md").read_text()
  assert "| crema_step2 | 100% |" in table and "| random_init | lead_I_only |" in table
  with np.load(tmp_path / "embeddings.npz") as emb:
    assert emb["test_features"].shape[1] == config.model.emb_dim
    assert len(emb["test_ecg_id"]) == len(emb["test_labels"])


def test_finetuning_changes_the_encoder_and_reports_the_tasks(pretrained, tmp_path):
  config, workdir = pretrained
  evaluation = _eval_config(config, workdir, mode="finetune", tasks=("MI",),
                            label_fractions=(1.0,), seeds=(0,), random_init_baseline=False,
                            robustness=("lead_I_only",), plots=False, bootstrap=0)
  evaluation.finetune.update(steps=4, batch_size=8, eval_every=2, warmup_steps=1, lr=1e-2)
  results = evaluate.evaluate(evaluation, tmp_path)
  run = results["encoders"]["crema_step2"]["runs"]["fraction_1/seed_0/MI"]
  assert run["n"] > 0 and "lead_I_only" in results["encoders"]["crema_step2"][
      "robustness"]
  # The fine-tuning loop itself: the encoder moves, the decoder does not.
  mesh = sharding.make_mesh()
  pretrain, model, _, params = evaluate.restore_encoder(evaluation, mesh)
  prepared = storage.PreparedSource(config.data.data_dir, config.data.name)
  result = finetune.finetune(model, params, pretrain, evaluation.finetune, prepared,
                             pipeline.select(prepared, (1, 2, 3, 4, 5, 6, 7, 8)),
                             [records.SUPERCLASSES.index("MI")], mesh)
  assert [h["step"] for h in result.history] == [2, 4]
  tuned = result.params["crema"]
  assert not np.allclose(tuned["encoder"]["block0"]["mlp"]["fc1"]["kernel"],
                         params["encoder"]["block0"]["mlp"]["fc1"]["kernel"])
  np.testing.assert_array_equal(tuned["decoder_pred"]["kernel"],
                                params["decoder_pred"]["kernel"])


def test_probe_refuses_a_checkpoint_pretrained_on_the_test_fold(pretrained, tmp_path):
  config, workdir = pretrained
  leaky = tmp_path / "leaky_run"
  shutil.copytree(workdir, leaky)
  # The same run as if it had pretrained on every fold (10, the test fold, included).
  saved = leaky / "checkpoints" / "2" / "config" / "metadata"
  saved_config = json.loads(saved.read_text())
  saved_config["data"]["pretrain_folds"] = []
  saved.write_text(json.dumps(saved_config))
  with pytest.raises(leakage.LeakageError, match="test-fold"):
    evaluate.evaluate(_eval_config(config, leaky), tmp_path / "out")
  assert not (tmp_path / "out").exists()
  _, _, step, _ = evaluate.restore_encoder(
      _eval_config(config, leaky, allow_test_overlap=True), sharding.make_mesh())
  assert step == 2
