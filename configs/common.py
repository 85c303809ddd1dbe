"""Fields shared by every experiment config: the data source, the input pipeline and the
view augmentations. Experiment files (`demo.py`, `pretrain.py`, ...) start from these."""

import ml_collections

from crema_jax.data.records import LEADS
from crema_jax import models

DEMO_RAW_DIR = "demo_output/ptbxl_synthetic"
DEMO_DATA_DIR = "demo_output/prepared"


def augment_config() -> ml_collections.ConfigDict:
  """Random view augmentations, in standardised units; 0 switches one off."""
  c = ml_collections.ConfigDict()
  c.random_crop = True          # Random (else centred) crop when longer than seq_len.
  c.scale = 0.2                 # Amplitude x U(1 - scale, 1 + scale).
  c.noise_std = 0.05            # Gaussian noise, std drawn from U(0, noise_std).
  c.wander_amplitude = 0.2      # Baseline wander amplitude (per lead U(0, a)).
  c.wander_max_hz = 0.5         # Baseline wander frequency drawn from U(0.05, max).
  c.lead_dropout = 0.1          # Each lead zeroed with this probability.
  c.max_shift_seconds = 0.1     # Time shift U(-s, s), edge values repeated (host, a slice).
  return c


def data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Source and preparation.
  c.source = "ptbxl"            # A reader in crema_jax.data.readers.registry.READERS.
  c.name = "ptbxl"              # The prepared dataset's name under data_dir.
  c.raw_dir = ""                # The folder as downloaded from its owners.
  c.data_dir = ""               # Where prepared ArrayRecord shards go.
  c.sampling_rate = 500
  c.min_seconds = 5.0           # Shorter records are skipped.
  c.max_amplitude_mv = 30.0     # A lead beyond this is skipped (a gain/unit error); 0: off.
  c.records_per_shard = 1000
  c.prepare_workers = 2
  c.leads = LEADS               # A subset (e.g. ("I",), ("I", "II")) for reduced leads.
  c.lead_aliases = ""           # Header names to rename first, e.g. "MLII=II".
  c.derive_limb_leads = False   # ecg_files: III, aVR, aVL, aVF from I and II when absent.
  c.window_seconds = 0.0        # > 0: cut records longer than long_seconds into windows
  c.window_stride_seconds = 0.0  # of this length every stride (0: stride = window).
  c.long_seconds = 60.0
  # A labels table (CSV: file, patient, split, label columns; crema_jax.data.labels_table)
  # checked against the folder and kept with the prepared data for the evaluation.
  c.labels_table = ""
  # A mixed corpus (data.source = "corpus", see configs/corpus.py): {name: {reader,
  # raw_dir, weight, other data fields}}; empty for a single source.
  c.corpus = ml_collections.ConfigDict()
  # Leakage guard: with a PTB-XL folder here, prepare leaves out records that are (or
  # copy) PTB-XL ECGs of exclude_folds (() = all ten) and says so in the manifest.
  c.leakage = ml_collections.ConfigDict({"ptbxl_dir": "", "exclude_folds": ()})
  # Input pipeline.
  c.seq_len = 5000              # Samples per view (10 s at 500 Hz).
  c.normalize = "per_lead"      # "per_lead" (per-record standardisation) or "none".
  c.pretrain_folds = (1, 2, 3, 4, 5, 6, 7, 8)  # () = every record (unlabelled sources).
  c.pretrain_patient_fraction = 1.0  # Pretrain on this share of the patients (nested).
  c.train_folds = (1, 2, 3, 4, 5, 6, 7, 8)
  c.val_folds = (9,)
  c.test_folds = (10,)
  c.eval_leads = ()             # Evaluate on these leads only, others zeroed (() = all).
  c.patient_pairs = True        # Pair each ECG with another of the same patient.
  c.shuffle_seed = 0
  c.worker_count = "auto"       # Grain worker processes: "auto" (sized to the host) or "N".
  c.read_threads = 2
  c.prefetch_buffer = 4
  c.augment = augment_config()
  return c


def loss_config(preset: str = "hl") -> ml_collections.ConfigDict:
  """Loss weights: "gl" (reconstruction only), "cl" (contrastive only) or "hl" (both)."""
  weights = {"gl": (1.0, 0.0, 0.0), "cl": (0.0, 1.0, 1.0), "hl": (1.0, 1.0, 1.0)}
  if preset not in weights:
    raise ValueError(f"loss preset {preset!r} is not one of {sorted(weights)}")
  c = ml_collections.ConfigDict()
  c.reconstruction, c.sample, c.patient = weights[preset]
  c.temperature = 0.1
  return c


def optimizer_config() -> ml_collections.ConfigDict:
  """AdamW with linear warmup and cosine decay, global-norm clipping."""
  c = ml_collections.ConfigDict()
  c.lr = 1e-4
  c.warmup_steps = 1000
  c.min_lr_ratio = 0.01
  c.weight_decay = 0.05
  c.b1 = 0.9
  c.b2 = 0.95
  c.clip_norm = 1.0
  return c


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The fields of a named model variant (crema_jax.models.VARIANTS), overridable.

  The variant's seq_len is not among them: it is data.seq_len (see base_config)."""
  fields = dict(models.VARIANTS[variant])
  del fields["seq_len"]
  return ml_collections.ConfigDict(fields)


def base_config(variant: str, loss_preset: str = "hl") -> ml_collections.ConfigDict:
  """Everything a pretraining run reads, with the paper's defaults where it gives them."""
  config = ml_collections.ConfigDict()
  config.mode = "pretrain"
  config.seed = 0
  config.data = data_config()
  config.model = model_config(variant)
  config.data.seq_len = models.VARIANTS[variant]["seq_len"]
  config.mask_ratio = 0.0 if loss_preset == "cl" else 0.75  # CL: whole views.
  config.loss = loss_config(loss_preset)
  config.optimizer = optimizer_config()
  config.compute_dtype = "float32"  # "bfloat16" on TPU/GPU; parameters stay float32.
  config.batch_size = 256           # Global batch, split over every device.
  config.total_steps = 100_000
  config.log_every = 50
  config.checkpoint_every = 1000
  config.checkpoint_keep = 3
  config.progress_bar = True
  # fsdp: parameters split over that many devices; shard_optimizer: AdamW's moments
  # split over every device (ZeRO-1; parameters stay replicated).
  config.mesh = ml_collections.ConfigDict({"fsdp": 1, "shard_optimizer": False})
  return config


def runlocal(config: ml_collections.ConfigDict) -> None:
  """Shrinks a pretraining config in place to a laptop-sized run (`:runlocal`)."""
  config.model = model_config("tiny")
  config.batch_size = 16
  config.total_steps = 20
  config.log_every = 5
  config.checkpoint_every = 10
