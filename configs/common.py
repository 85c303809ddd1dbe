"""Fields shared by every experiment config: the data source, the input pipeline and the
view augmentations. Experiment files (`demo.py`, `pretrain.py`, ...) start from these."""

import ml_collections

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
  c.max_shift_seconds = 0.1     # Time shift U(-s, s), edges padded with edge values.
  return c


def data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Source and preparation.
  c.source = "ptbxl"            # A reader in crema_jax.data.sources.READERS.
  c.name = "ptbxl"              # The prepared dataset's name under data_dir.
  c.raw_dir = ""                # The folder as downloaded from its owners.
  c.data_dir = ""               # Where prepared ArrayRecord shards go.
  c.sampling_rate = 500
  c.min_seconds = 5.0           # Shorter records are skipped.
  c.records_per_shard = 1000
  c.prepare_workers = 2
  # Input pipeline.
  c.seq_len = 5000              # Samples per view (10 s at 500 Hz).
  c.normalize = "per_lead"      # "per_lead" (per-record standardisation) or "none".
  c.pretrain_folds = (1, 2, 3, 4, 5, 6, 7, 8)  # () = every record (unlabelled sources).
  c.train_folds = (1, 2, 3, 4, 5, 6, 7, 8)
  c.val_folds = (9,)
  c.test_folds = (10,)
  c.patient_pairs = True        # Pair each ECG with another of the same patient.
  c.shuffle_seed = 0
  c.worker_count = 0            # Grain worker processes (0: threads in-process).
  c.read_threads = 2
  c.prefetch_buffer = 4
  c.augment = augment_config()
  return c
