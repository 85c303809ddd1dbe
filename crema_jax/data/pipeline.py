"""Grain input pipelines over a prepared source.

Pretraining: `MapDataset.source -> [process shard] -> shuffle -> repeat -> random_map(
PretrainViews) -> batch -> to_iter_dataset -> [mp_prefetch]`. Each example holds two
augmented, masked views of one ECG and one view of another ECG of the same patient.
A prepared corpus runs that chain up to `random_map` per source and mixes the sources'
streams by weight (`MapDataset.mix`) before batching; patient keys are offset per
source. Evaluation: one centred, unaugmented view with labels, every record once, in
order (optionally with only `data.eval_leads` kept).

All randomness comes from Grain's per-example Generators (seeded by the pipeline seed and
the example's position), so a run is reproducible and the iterator state resumes it
exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from absl import flags
import grain
import ml_collections
import numpy as np

from crema_jax import masking
from crema_jax.data import augment
from crema_jax.data import records
from crema_jax.data import signal
from crema_jax.data import storage


def select(prepared: storage.PreparedSource, folds: Sequence[int]) -> np.ndarray:
  """Positions of the records in `folds` (all records when `folds` is empty)."""
  if not len(folds):
    return np.arange(len(prepared), dtype=np.int64)
  return np.flatnonzero(np.isin(prepared.index["fold"], np.asarray(folds)))


def select_pretrain(prepared: storage.PreparedSource, folds: Sequence[int]) -> np.ndarray:
  """Positions of a corpus member's pretraining records: those in `folds` plus every
  record without a fold (0: sources other than PTB-XL); all when `folds` is empty."""
  if not len(folds):
    return np.arange(len(prepared), dtype=np.int64)
  fold = prepared.index["fold"]
  return np.flatnonzero((fold == 0) | np.isin(fold, np.asarray(folds)))


def patient_keys(patient_ids: np.ndarray) -> np.ndarray:
  """[n] int32 keys, equal exactly where the int64 patient ids are equal."""
  return np.unique(patient_ids, return_inverse=True)[1].astype(np.int32)


class PatientIndex:
  """For each record of a subset, the other records of the same patient."""

  def __init__(self, patient_ids: np.ndarray):
    keys = patient_keys(patient_ids)
    self._order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys)
    self._starts = np.concatenate([[0], np.cumsum(counts)])
    self._keys = keys
    self.num_patients = len(counts)

  def key(self, i: int) -> int:
    return int(self._keys[i])

  def others(self, i: int) -> np.ndarray:
    k = self._keys[i]
    group = self._order[self._starts[k]:self._starts[k + 1]]
    return group[group != i]


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


class SubsetSource:
  """A Grain random-access source over `positions` of a prepared source.

  Yields the decoded TFDS example plus `subset_index` (i) and `position` (its index in
  the prepared source).
  """

  def __init__(self, prepared: storage.PreparedSource, positions: np.ndarray):
    self._data_source = prepared.data_source
    self.positions = np.asarray(positions, np.int64)
    self.patients = PatientIndex(prepared.index["patient_id"][self.positions])

  def __len__(self) -> int:
    return len(self.positions)

  def __getitem__(self, i: int) -> dict:
    position = int(self.positions[i])
    example = self._data_source[position]
    example["subset_index"] = i
    example["position"] = position
    return example

  def __repr__(self) -> str:
    return f"SubsetSource({len(self)} records)"


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How one view is cut, normalised and masked."""
  seq_len: int
  sampling_rate: int
  normalize: str
  num_tokens: int
  mask_ratio: float

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ViewSpec":
    return cls(
        seq_len=config.data.seq_len, sampling_rate=config.data.sampling_rate,
        normalize=config.data.normalize,
        num_tokens=masking.num_tokens(config.data.seq_len, config.model.patch_size,
                                      config.model.num_leads, config.model.token_layout),
        mask_ratio=config.mask_ratio)

  def signal(self, ecg: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """float16 [time, 12] mV -> float32 [seq_len, 12], cropped and normalised."""
    x = augment.crop(np.asarray(ecg, np.float32), self.seq_len, rng)
    if self.normalize == "per_lead":
      x = signal.standardize_leads(x)
    return x


class PretrainViews(grain.transforms.RandomMap):
  """One record -> two augmented masked views, plus a same-patient partner view.

  Output (numpy): view1, view2, pair [seq_len, leads] float32; keep1, masked1, keep2,
  masked2, keep_pair, masked_pair [K] / [M] int32; has_pair bool (False: no other ECG
  of this patient, and `pair` is a third view of the same ECG); patient int32 (equal for
  ECGs of one patient); position, pair_position int64 (indices in the prepared source).
  """

  def __init__(self, subset: SubsetSource, spec: ViewSpec,
               augment_config: ml_collections.ConfigDict, patient_pairs: bool,
               patient_offset: int = 0, position_offset: int = 0):
    self._subset = subset
    self._patients = subset.patients
    self._spec = spec
    self._augment = augment_config
    self._patient_pairs = patient_pairs
    # In a mixed corpus: keys past the previous sources' patients, and positions in
    # the corpus (the members' sources one after another).
    self._patient_offset = patient_offset
    self._position_offset = position_offset

  def _view(self, ecg: np.ndarray, rng: np.random.Generator):
    """-> (x [seq_len, leads], ids_keep [K], ids_masked [M])."""
    x = self._spec.signal(ecg, rng if self._augment.random_crop else None)
    x = augment.augment(x, rng, self._augment, self._spec.sampling_rate)
    return (x, *masking.random_masking(rng, self._spec.num_tokens, self._spec.mask_ratio))

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    i = element["subset_index"]
    others = self._patients.others(i) if self._patient_pairs else ()
    partner = self._subset[int(rng.choice(others))] if len(others) else element
    out = {"has_pair": np.bool_(len(others) > 0),
           "patient": np.int32(self._patients.key(i) + self._patient_offset),
           "position": np.int64(element["position"] + self._position_offset),
           "pair_position": np.int64(partner["position"] + self._position_offset)}
    for name, ecg in (("1", element["ecg"]), ("2", element["ecg"]),
                      ("_pair", partner["ecg"])):
      x, out[f"keep{name}"], out[f"masked{name}"] = self._view(ecg, rng)
      out["pair" if name == "_pair" else f"view{name}"] = x
    return out


def _iterate(ds: grain.MapDataset, data_config: ml_collections.ConfigDict):
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=data_config.read_threads,
      prefetch_buffer_size=data_config.prefetch_buffer))
  if data_config.worker_count > 0:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()  # Grain's workers read absl flags (notebooks, tests).
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=data_config.worker_count))
  return it


def pretrain_dataset(config: ml_collections.ConfigDict, prepared: storage.PreparedSource,
                     *, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The infinite pretraining stream of this process's share of the global batch.

  Args:
    config: the experiment config (uses data.*, model.patch_size/num_leads/token_layout,
      mask_ratio, batch_size = the global batch size).
    prepared: the prepared source.
    process_index, process_count: this JAX process's place; each process reads a
      disjoint slice of the records and yields batch_size // process_count examples.
  """
  if config.batch_size % process_count:
    raise ValueError(f"batch_size={config.batch_size} is not divisible by "
                     f"{process_count} processes")
  data = config.data
  check_leads(config, prepared)
  if prepared.members:
    ds = _mixed_views(config, prepared, process_index, process_count)
  else:
    subset = SubsetSource(prepared, select(prepared, data.pretrain_folds))
    ds = _member_views(config, subset, process_index, process_count,
                       seed=data.shuffle_seed, path=prepared.path)
  ds = ds.batch(config.batch_size // process_count, drop_remainder=True)
  return _iterate(ds, data)


def _member_views(config, subset: SubsetSource, process_index: int, process_count: int,
                  seed: int, path, patient_offset: int = 0,
                  position_offset: int = 0) -> grain.MapDataset:
  """This process's slice of `subset`, shuffled, repeated, as PretrainViews examples."""
  if len(subset) < process_count:
    raise ValueError(f"{path}: {len(subset)} records for {process_count} processes")
  views = PretrainViews(subset, ViewSpec.from_config(config), config.data.augment,
                        config.data.patient_pairs, patient_offset, position_offset)
  ds = grain.MapDataset.source(subset)
  ds = ds[process_index::process_count]
  ds = ds.shuffle(seed=seed).repeat()
  return ds.random_map(views, seed=seed + 1)


def _mixed_views(config, corpus: storage.PreparedSource, process_index: int,
                 process_count: int) -> grain.MapDataset:
  """The corpus members' view streams mixed by weight (`MapDataset.mix`).

  Each member is shuffled and repeated on its own, so the mix keeps its proportions
  whatever the members' sizes; patients pair only within their member, and patient
  keys are offset per member so that they never collide across sources.
  """
  streams, patient_offset = [], 0
  for m, member in enumerate(corpus.members):
    subset = SubsetSource(member, select_pretrain(member, config.data.pretrain_folds))
    streams.append(_member_views(
        config, subset, process_index, process_count,
        seed=config.data.shuffle_seed + 1000 * m, path=member.path,
        patient_offset=patient_offset, position_offset=int(corpus.starts[m])))
    patient_offset += subset.patients.num_patients
  return grain.MapDataset.mix(streams, [float(w) for w in corpus.weights])


class EvalView(grain.transforms.Map):
  """One record -> a centred, unaugmented, normalised view with its labels.

  lead_mask: optional [leads] 1/0 multiplying the view (see `eval_lead_mask`).
  """

  def __init__(self, spec: ViewSpec, subset: SubsetSource,
               lead_mask: np.ndarray | None = None):
    self._spec = spec
    self._patients = subset.patients
    self._lead_mask = lead_mask

  def map(self, element: dict) -> dict:
    view = self._spec.signal(element["ecg"], None)
    if self._lead_mask is not None:
      view = view * self._lead_mask
    return {
        "view": view,
        "labels": np.asarray(element["labels"], np.float32),
        "ecg_id": np.int64(element["ecg_id"]),
        "patient": np.int32(self._patients.key(element["subset_index"])),
        "fold": np.int32(element["fold"]),
        "position": np.int64(element["position"]),
    }


def eval_dataset(config: ml_collections.ConfigDict, prepared: storage.PreparedSource,
                 folds: Sequence[int], batch_size: int, *, process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
  """Every record of `folds` once, in prepared order; the last batch may be smaller.

  With `data.eval_leads` set, leads outside it are zeroed (a 12-lead checkpoint
  evaluated on fewer leads)."""
  mask = eval_lead_mask(config, check_leads(config, prepared))
  subset = SubsetSource(prepared, select(prepared, folds))
  ds = grain.MapDataset.source(subset)
  ds = ds[process_index::process_count]
  ds = ds.map(EvalView(ViewSpec.from_config(config), subset, mask))
  ds = ds.batch(batch_size, drop_remainder=False)
  return _iterate(ds, config.data)


class LabelledView(grain.transforms.RandomMap):
  """One record -> one augmented view with its labels (supervised fine-tuning).

  Output: view [seq_len, leads] float32, labels [5] float32, position int64.
  """

  def __init__(self, spec: ViewSpec, augment_config: ml_collections.ConfigDict):
    self._spec = spec
    self._augment = augment_config

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    x = self._spec.signal(element["ecg"], rng if self._augment.random_crop else None)
    return {"view": augment.augment(x, rng, self._augment, self._spec.sampling_rate),
            "labels": np.asarray(element["labels"], np.float32),
            "position": np.int64(element["position"])}


def finetune_dataset(config: ml_collections.ConfigDict, prepared: storage.PreparedSource,
                     positions: np.ndarray, batch_size: int, *, seed: int = 0,
                     augment_config: ml_collections.ConfigDict | None = None,
                     process_index: int = 0, process_count: int = 1
                     ) -> grain.IterDataset:
  """The infinite, shuffled stream of labelled augmented views of `positions` (indices
  in the prepared source), `batch_size // process_count` examples per process."""
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} "
                     "processes")
  subset = SubsetSource(prepared, positions)
  ds = grain.MapDataset.source(subset)[process_index::process_count]
  ds = ds.shuffle(seed=seed).repeat()
  ds = ds.random_map(LabelledView(ViewSpec.from_config(config),
                                  augment_config or config.data.augment), seed=seed + 1)
  ds = ds.batch(batch_size // process_count, drop_remainder=True)
  return _iterate(ds, config.data)
