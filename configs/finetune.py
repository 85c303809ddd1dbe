"""Fine-tuning a pretrained CREMA encoder with a linear head on PTB-XL, end to end.

  python -m crema_jax.main --config configs/finetune.py --workdir /ckpt/crema/finetune \
      --config.checkpoint=/ckpt/crema --config.data.data_dir=/data/prepared \
      --config.finetune.layer_decay=0.65

Each task (and label fraction and seed) fine-tunes its own copy of the encoder, its head
started from the fitted linear probe (LP-FT) and learning at `finetune.head_lr_scale` x
the encoder's rate, with layer-wise learning-rate decay, its own augmentation
(`finetune.augment`) and early stopping on the validation fold's AUROC. The other
fields are those of `configs/probe.py`; reduced-lead probes and other sources are
probing analyses (set `data.eval_leads` to fine-tune on fewer leads).
"""

import ml_collections

from configs import probe


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = probe.get_config(arg)
  config.mode = "finetune"
  config.label_fractions = (1.0, 0.1)
  config.reduced_leads = ()
  config.domains = ()
  config.robustness = ("noise_snr10", "baseline_wander_0.5mv", "limb_leads_only",
                       "lead_I_only", "rate_100hz")
  return config
