"""The registry of raw-source readers: `data.source` in a config names one of these."""

from __future__ import annotations

from typing import Callable

import ml_collections

from crema_jax.data import code15
from crema_jax.data import mimic_ecg
from crema_jax.data import ptbxl
from crema_jax.data import records
from crema_jax.data import wfdb_folder

READERS: dict[str, Callable[..., records.Source]] = {
    "ptbxl": lambda cfg: ptbxl.PTBXL(cfg.raw_dir, sampling_rate=cfg.sampling_rate,
                                     min_seconds=cfg.min_seconds),
    "wfdb": lambda cfg: wfdb_folder.WFDBFolder(cfg.raw_dir,
                                               sampling_rate=cfg.sampling_rate,
                                               name=cfg.name),
    "code15": lambda cfg: code15.HDF5Exams(cfg.raw_dir, sampling_rate=cfg.sampling_rate,
                                           name=cfg.name, min_seconds=cfg.min_seconds),
    "samitrop": lambda cfg: code15.HDF5Exams(cfg.raw_dir,
                                             sampling_rate=cfg.sampling_rate,
                                             name=cfg.name, hdf5_glob="exams.hdf5",
                                             min_seconds=cfg.min_seconds),
    "mimic_iv_ecg": lambda cfg: mimic_ecg.MimicIVECG(cfg.raw_dir,
                                                     sampling_rate=cfg.sampling_rate,
                                                     name=cfg.name,
                                                     min_seconds=cfg.min_seconds),
}


def build_source(data_config: ml_collections.ConfigDict) -> records.Source:
  """The reader named by `data_config.source` over `data_config.raw_dir`."""
  if data_config.source not in READERS:
    raise ValueError(f"data.source={data_config.source!r} is not one of "
                     f"{sorted(READERS)}")
  if not data_config.raw_dir:
    raise ValueError("data.raw_dir is empty: point it at the downloaded dataset folder")
  return READERS[data_config.source](data_config)
