"""Grain input pipelines over a prepared source.

Pretraining: `MapDataset.range(records) -> [process slice] -> shuffle -> repeat ->
batch -> random_map(PretrainCrops) -> to_iter_dataset -> [mp_prefetch]`. The chain
carries record indices until the batch is formed; `PretrainCrops` then reads the whole
batch at once (one ArrayRecord `__getitems__`, only the signal decoded) and slices the
raw crops of each example's views (two of one ECG, and one of another ECG of the same
patient when the patient loss uses it); the step standardises, augments and masks them
on the device (`crema_jax.input.device`). A prepared corpus shuffles and repeats each
source's indices on its own and mixes the streams by weight (`MapDataset.mix`) before
batching. Evaluation: one centred, unaugmented view with labels from the prepared
index, every record once, in order (optionally with only `data.eval_leads` kept).

All randomness comes from Grain's per-batch Generators (seeded by the pipeline seed and
the batch's position), so a run is reproducible and the iterator state resumes it
exactly.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import flags
import grain
import ml_collections
import numpy as np

from crema_jax.data import records
from crema_jax.data import storage
from crema_jax.input import views


def prepared_leads(prepared: storage.PreparedSource) -> tuple[str, ...]:
  """The leads stored in a prepared source (every member of a corpus must agree)."""
  found = {tuple(m.manifest.get("leads", records.LEADS))
           for m in (prepared.members or [prepared])}
  if len(found) != 1:
    raise ValueError(f"{prepared.path}: the corpus sources hold different leads "
                     f"{sorted(found)}; prepare them with one data.leads")
  return found.pop()


def check_leads(config: ml_collections.ConfigDict,
                prepared: storage.PreparedSource) -> tuple[str, ...]:
  """The prepared leads, or ValueError when the model expects another number."""
  leads = prepared_leads(prepared)
  if len(leads) != config.model.num_leads:
    raise ValueError(f"{prepared.path} holds {len(leads)} lead(s) {list(leads)} but "
                     f"model.num_leads={config.model.num_leads}: set "
                     f"--config.model.num_leads={len(leads)} (or prepare with other "
                     "data.leads)")
  return leads


def eval_lead_mask(config: ml_collections.ConfigDict,
                   leads: Sequence[str]) -> np.ndarray | None:
  """[len(leads)] float32 1/0 keeping only `data.eval_leads` (None: keep all).

  Evaluates a checkpoint on fewer leads than it was trained with: the other leads
  are zeroed, as a lead that is not recorded (and as lead dropout does in training).
  """
  wanted = tuple(config.data.get("eval_leads") or ())
  if not wanted:
    return None
  missing = [lead for lead in wanted if lead not in leads]
  if missing:
    raise ValueError(f"data.eval_leads {list(wanted)}: {missing} not among the prepared "
                     f"leads {list(leads)}")
  return np.array([lead in wanted for lead in leads], np.float32)


def worker_count(value: int | str, cpus: int | None = None) -> int:
  """Grain worker processes for `data.worker_count`: a number, or "auto" = one per
  host core beyond two (kept for the training loop and the runtime), at most 16; 0 (the
  reading threads of this process) on a host of two cores or fewer."""
  if value == "auto":
    cpus = cpus or os.cpu_count() or 1
    return min(max(cpus - 2, 0), 16)
  try:
    count = int(value)
  except (TypeError, ValueError):
    count = -1
  if count < 0:
    raise ValueError(f"data.worker_count={value!r}: expected 'auto' or a count >= 0")
  return count


def _iterate(ds: grain.MapDataset, data_config: ml_collections.ConfigDict):
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=data_config.read_threads,
      prefetch_buffer_size=data_config.prefetch_buffer))
  workers = worker_count(data_config.worker_count)
  if workers > 0:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()  # Grain's workers read absl flags (notebooks, tests).
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return it


def pretrain_dataset(config: ml_collections.ConfigDict, prepared: storage.PreparedSource,
                     *, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The infinite pretraining stream of this process's share of the global batch:
  `views.PretrainCrops` batches (signals [b, views, leads, seq_len] float16, patient,
  has_pair, position, pair_position).

  Args:
    config: the experiment config (uses data.*, loss.patient, model.num_leads,
      batch_size = the global batch size).
    prepared: the prepared source or corpus.
    process_index, process_count: this JAX process's place; each process reads a
      disjoint slice of the records and yields batch_size // process_count examples.
  """
  if config.batch_size % process_count:
    raise ValueError(f"batch_size={config.batch_size} is not divisible by "
                     f"{process_count} processes")
  data = config.data
  check_leads(config, prepared)
  members = prepared.members or [prepared]
  positions = [storage.pretrain_positions(m, data.pretrain_folds) + start
               if prepared.members else storage.fold_positions(m, data.pretrain_folds)
               for m, start in zip(members, prepared.starts)]
  fraction = data.get("pretrain_patient_fraction", 1.0)
  positions = [p[storage.patient_fraction(prepared.index["patient_id"][p], fraction)]
               for p in positions]
  subset = views.Subset(prepared, np.concatenate(positions))
  # One stream of subset indices per source, each shuffled and repeated on its own so
  # that a corpus mix keeps its weights whatever the sources' sizes.
  bounds = np.cumsum([0] + [len(p) for p in positions])
  streams = []
  for m, member in enumerate(members):
    if bounds[m + 1] - bounds[m] < process_count:
      raise ValueError(f"{member.path}: {bounds[m + 1] - bounds[m]} pretraining records "
                       f"for {process_count} processes")
    ds = grain.MapDataset.range(int(bounds[m]), int(bounds[m + 1]))
    ds = ds[process_index::process_count]
    streams.append(ds.shuffle(seed=data.shuffle_seed + 1000 * m).repeat())
  ds = (streams[0] if len(streams) == 1 else
        grain.MapDataset.mix(streams, [float(w) for w in prepared.weights]))
  ds = ds.batch(config.batch_size // process_count, drop_remainder=True)
  ds = ds.random_map(views.PretrainCrops(
      subset, data.seq_len, views.num_views(config), data.augment.random_crop,
      views.max_shift_samples(data.augment, data.sampling_rate)),
                     seed=data.shuffle_seed + 1)
  return _iterate(ds, data)


def eval_dataset(config: ml_collections.ConfigDict, prepared: storage.PreparedSource,
                 folds: Sequence[int], batch_size: int, *,
                 positions: np.ndarray | None = None, process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
  """Every record of `folds` (or at `positions`, indices in the prepared source) once,
  in that order, as centred float32 mV crops [b, leads, seq_len] (`views.EvalView`);
  the last batch may be
  smaller.

  With `data.eval_leads` set, leads outside it are zeroed (a 12-lead checkpoint
  evaluated on fewer leads)."""
  mask = eval_lead_mask(config, check_leads(config, prepared))
  if positions is None:
    positions = storage.fold_positions(prepared, folds)
  subset = views.Subset(prepared, positions)
  ds = grain.MapDataset.range(len(subset))[process_index::process_count]
  ds = ds.batch(batch_size, drop_remainder=False)
  ds = ds.map(views.EvalView(config.data.seq_len, subset, mask))
  return _iterate(ds, config.data)


def finetune_dataset(config: ml_collections.ConfigDict, prepared: storage.PreparedSource,
                     positions: np.ndarray, batch_size: int, *, seed: int = 0,
                     random_crop: bool = True, max_shift: int = 0,
                     process_index: int = 0,
                     process_count: int = 1) -> grain.IterDataset:
  """The infinite, shuffled stream of labelled raw crops (`views.LabelledCrop`) of
  `positions` (indices in the prepared source), `batch_size // process_count` examples
  per process, shifted in time by up to `max_shift` samples; the fine-tuning step
  standardises and augments them. With
  `data.eval_leads` set, leads outside it are zeroed, as in evaluation."""
  mask = eval_lead_mask(config, check_leads(config, prepared))
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} "
                     "processes")
  subset = views.Subset(prepared, positions)
  ds = grain.MapDataset.range(len(subset))[process_index::process_count]
  ds = ds.shuffle(seed=seed).repeat()
  ds = ds.batch(batch_size // process_count, drop_remainder=True)
  ds = ds.random_map(views.LabelledCrop(subset, config.data.seq_len, random_crop, mask,
                                        max_shift),
                     seed=seed + 1)
  return _iterate(ds, config.data)
