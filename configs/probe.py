"""Linear probing of a pretrained CREMA checkpoint on PTB-XL, the benchmark's protocol.

  python -m crema_jax.main --config configs/probe.py --workdir /ckpt/crema/probe \
      --config.checkpoint=/ckpt/crema --config.data.data_dir=/data/prepared

Folds 1-8 train, 9 validation, 10 test; the six label sets of the PTB-XL benchmark
(all, diagnostic, subdiagnostic, superdiagnostic, form, rhythm) and the paper's binary
tasks (MI, STTC, CD, HYP), each at three label fractions and three seeds, next to a
random-initialised encoder; then paired differences, age/sex subgroups, robustness
shifts and probes retrained on 1, 2 and 6 leads (crema_jax/evaluation/evaluators/). The model
and data fields come from the checkpoint; `data.data_dir` / `data.name` name the
prepared PTB-XL it is scored on (`data_from_checkpoint=True`: the checkpoint's own
pretraining data; one of the two is required), `data.eval_leads` at fewer leads, `domains` at other
hospitals' prepared labelled sources (`--config.domains='("/data/prepared:cpsc2018",)'`).

`configs/probe.py:quick`: one seed, two label fractions, fewer shifts and bootstrap
resamples (the demo's probe).
"""

import ml_collections

from configs import common
from crema_jax.evaluation import probe
from crema_jax.evaluation import shifts
from crema_jax.evaluation import tasks

LIMB_LEADS = "I,II,III,aVR,aVL,aVF"


def finetune_augment() -> ml_collections.ConfigDict:
  """Fine-tuning's own view augmentation: milder than pretraining's, no lead dropout
  (a supervised head should see every lead it will be tested on)."""
  c = common.augment_config()
  c.scale = 0.1
  c.noise_std = 0.02
  c.wander_amplitude = 0.1
  c.lead_dropout = 0.0
  return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "probe"
  config.checkpoint = ""                 # The pretraining workdir (or its checkpoints/).
  config.checkpoint_step = 0             # 0: the latest.
  config.seed = 0
  # "": as trained. eval_leads: evaluate (and fine-tune) on these leads, others zeroed.
  config.data = ml_collections.ConfigDict({"data_dir": "", "name": "", "eval_leads": ()})
  # With data.data_dir empty, the evaluation runs on the checkpoint's own pretraining
  # data only when this says so (a probe never guesses its data).
  config.data_from_checkpoint = False
  config.pool = "checkpoint"             # "mean", "cls", or "checkpoint" (as trained).
  config.tasks = tasks.TASKS
  config.label_fractions = (1.0, 0.1, 0.01)  # Of the training ECGs, sampled by patient.
  config.seeds = (0, 1, 2)
  config.bootstrap = 1000                # Test-fold resamples for the 95% intervals.
  config.bootstrap_unit = "ecg"          # "patient": a patient's ECGs move together.
  config.robustness = tuple(shifts.SHIFTS)
  # Probes retrained on these lead sets (ST-MEM's protocol), for these tasks.
  config.reduced_leads = ("I", "I,II", LIMB_LEADS)
  config.reduced_lead_tasks = ("superdiagnostic",)
  # Other hospitals' prepared labelled sources, "DATA_DIR:NAME" each: within-source
  # probes on a seeded, patient-disjoint split (written to the workdir) at these label
  # fractions, and the PTB-XL probe transferred.
  config.domains = ()
  config.domain_label_fractions = (0.01, 0.1, 1.0)
  config.domain_split_seed = 0
  config.random_init_baseline = True
  config.allow_test_overlap = False      # Probe even if pretraining saw test-fold ECGs.
  config.feature_batch_size = 64
  config.probe = ml_collections.ConfigDict(
      {"steps": 500, "lr": 1e-2, "l2_grid": probe.DEFAULT_L2_GRID, "eval_every": 25})
  config.finetune = ml_collections.ConfigDict(
      {"steps": 2000, "batch_size": 64, "lr": 1e-4, "head_lr_scale": 10.0,
       "warmup_steps": 100, "weight_decay": 0.05, "layer_decay": 0.75,
       "eval_every": 100, "patience": 5, "augment": finetune_augment()})
  config.mesh = ml_collections.ConfigDict({"fsdp": 1})
  config.plots = True
  config.num_reconstructions = 3
  config.progress_bar = True
  config.save_classifiers = True         # classifiers/TASK: head, thresholds, model card.

  if arg == "quick":
    config.seeds = (0,)
    config.label_fractions = (1.0, 0.1)
    config.bootstrap = 200
    config.robustness = ("noise_snr10", "baseline_wander_0.5mv", "powerline_50hz_0.2mv",
                         "limb_leads_only", "lead_I_only", "electrodes_la_ra",
                         "rate_100hz")
  return config
