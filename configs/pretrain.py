"""CREMA pretraining with the paper's best model (emb 1024, depth 2, patch 125).

  python -m crema_jax.main --config configs/pretrain.py:hl --workdir gs://BUCKET/crema \
      --config.data.data_dir=gs://BUCKET/prepared --config.data.name=ptbxl

The argument is a comma-separated list:
- `gl` (masked reconstruction only), `cl` (sample- and patient-level contrastive only)
  or `hl` (hybrid, the paper's best): the objective;
- `runlocal`: a small variant for a laptop;
- `tpu=GEN` (v4, v5e, v5p, v6e; with `chips=N`, default 4): the TPU recipe of
  `TPU_BATCH_PER_CHIP`, the batch per chip `benchmarks/tpu_aot.py` recommends for the
  paper step on that generation (compiler estimates: README "On TPU, before you have
  one"), so batch_size = that x chips and the learning rate scaled with it; bfloat16
  compute and AdamW's moments split over the chips (`mesh.shard_optimizer`). E.g. a
  v5e-16 slice: `configs/pretrain.py:hl,tpu=v5e,chips=16`;
- `fit_memory=GIB` (with `batch_per_device=32`, `fsdp=1`, `remat`, `bf16`): instead of
  the paper's model, the largest encoder (emb x depth, head width 64, patch 125) whose
  estimated memory per device for a training step stays within 90% of GIB
  (`crema_jax.models.sizing.estimate_train_bytes`; an estimate: check it with
  `benchmarks/train_step.py --compile_only` on the target). Set the global batch to
  batch_per_device x devices with `--config.batch_size`. Example, TPU v5e (16 GiB):
  `configs/pretrain.py:hl,fit_memory=16,bf16,remat`. The estimate's remat discount
  is not visible in XLA's CPU memory analysis: verify a remat choice on the target.
"""

import ml_collections

from configs import common
from crema_jax.models import sizing

# Global batch / chip for the paper step (HL, patient pairs, bfloat16), from
# `bash benchmarks/tpu_aot_sweep.sh` (benchmarks/results/tpu_aot/): the smallest batch
# within 3% of the best estimated ECGs/s per chip. Compiler estimates, not measurements.
TPU_BATCH_PER_CHIP = {"v4": 128, "v5e": 64, "v5p": 128, "v6e": 64}

FIT_EMB = (256, 384, 512, 640, 768, 1024, 1280, 1536, 2048, 2560, 3072)
FIT_DEPTH = (2, 4, 6, 8, 12, 16, 24, 32)


def fit_model(config: ml_collections.ConfigDict, memory_gib: float,
              batch_per_device: int, fsdp: int) -> ml_collections.ConfigDict:
  """The largest (parameters) encoder of FIT_EMB x FIT_DEPTH within the memory."""
  budget = 0.9 * memory_gib * 2 ** 30
  compute_bytes = 2 if config.compute_dtype == "bfloat16" else 4
  best = None
  for emb in FIT_EMB:
    for depth in FIT_DEPTH:
      model = config.model.to_dict()
      model.update(emb_dim=emb, depth=depth, num_heads=emb // 64, proj_hidden_dim=emb)
      need = sizing.estimate_train_bytes(
          model, seq_len=config.data.seq_len, mask_ratio=config.mask_ratio,
          batch_per_device=batch_per_device, compute_bytes=compute_bytes, fsdp=fsdp)
      params = sizing.count_params(model)
      if need <= budget and (best is None or params > best[0]):
        best = (params, model)
  if best is None:
    raise ValueError(f"fit_memory={memory_gib}: no model fits at batch_per_device="
                     f"{batch_per_device}; lower the batch or raise fsdp")
  return ml_collections.ConfigDict(best[1])


def get_config(arg: str = "hl") -> ml_collections.ConfigDict:
  parts = [p for p in arg.split(",") if p]
  options = dict(p.split("=", 1) for p in parts if "=" in p)
  flags = {p for p in parts if "=" not in p}
  unknown = (set(options) - {"fit_memory", "batch_per_device", "fsdp", "tpu", "chips"}) | (
      flags - {"gl", "cl", "hl", "runlocal", "remat", "bf16"})
  if unknown:
    raise ValueError(f"configs/pretrain.py: unknown argument(s) {sorted(unknown)}")
  preset = next((p for p in parts if p in ("gl", "cl", "hl")), "hl")
  config = common.base_config("paper", preset)
  config.batch_size = 256
  if "tpu" in options:
    generation = options["tpu"]
    if generation not in TPU_BATCH_PER_CHIP:
      raise ValueError(f"configs/pretrain.py: tpu={generation!r} is not one of "
                       f"{sorted(TPU_BATCH_PER_CHIP)}")
    chips = int(options.get("chips", 4))
    if chips < 1:
      raise ValueError(f"configs/pretrain.py: chips={chips} must be at least 1")
    config.batch_size = TPU_BATCH_PER_CHIP[generation] * chips
    config.compute_dtype = "bfloat16"
    config.mesh.shard_optimizer = True
  elif "chips" in options:
    raise ValueError("configs/pretrain.py: chips= needs tpu=")
  config.optimizer.lr = 1.5e-4 * config.batch_size / 256
  config.total_steps = 100_000
  if "bf16" in flags:
    config.compute_dtype = "bfloat16"
  if "remat" in flags:
    config.model.remat = True
  if "fsdp" in options:
    config.mesh.fsdp = int(options["fsdp"])
  if "fit_memory" in options:
    config.model = fit_model(config, float(options["fit_memory"]),
                             int(options.get("batch_per_device", 32)), config.mesh.fsdp)
  if "runlocal" in parts:
    common.runlocal(config)
  return config
