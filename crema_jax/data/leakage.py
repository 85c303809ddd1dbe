"""The leakage guard: PTB-XL evaluation ECGs stay out of pretraining.

PTB-XL is the evaluation set, and copies of it travel under other names (the
PhysioNet/CinC 2021 set holds all of it as HR00001..HR21837, resampled corpora and
hospital exports may hold more). When a corpus is prepared with a PTB-XL reference
(`data.leakage.ptbxl_dir`), every record read is matched against the reference:

- by identity: PTB-XL's own ecg_id for the `ptbxl` reader; the `HR{ecg_id:05d}` names
  of the Challenge copy for any other reader;
- by signal fingerprint, for renamed copies: the means of 0.2 s blocks of the first
  10 s of each lead, less the lead's mean (`fingerprint`), equal within 0.01 mV. Block means do not change
  with float16 storage, gain quantisation or resampling noise, and differ by tenths
  of a millivolt between different ECGs. Lookup is a hash on a few quantised blocks,
  probing the neighbouring bucket near a boundary, then a full comparison: constant
  time per record whatever the reference size.

Matches with a fold in `data.leakage.exclude_folds` (default: all ten folds) are left
out of the prepared data and listed in the manifest (how many, from which source, how
found); matches in other folds are kept and counted. `check_checkpoint` reads a
pretraining run's config and its corpus manifest and refuses (LeakageError) when the
pretraining data overlapped the probe's test folds, unless `allow=True`.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import pathlib
import re
from typing import Sequence

import numpy as np
import tqdm

from crema_jax.data import records

FINGERPRINT_SECONDS = 10.0
BLOCK_SECONDS = 0.2
NUM_BLOCKS = int(round(FINGERPRINT_SECONDS / BLOCK_SECONDS))
TOLERANCE_MV = 0.01   # Largest block-mean difference of a copy.
BUCKET_MV = 0.1       # Quantisation step of the hash key.
NUM_KEY_FEATURES = 6  # Blocks in the hash key.
MIN_BLOCKS = 25       # Blocks (5 s of one lead) that must agree for a match.
ALL_FOLDS = tuple(range(1, 11))
_CHALLENGE_NAME = re.compile(r"HR(\d{5})")


class LeakageError(Exception):
  """The pretraining data overlapped the evaluation folds."""


def fingerprint(ecg: np.ndarray, sampling_rate: float,
                leads: Sequence[str] = records.LEADS) -> np.ndarray:
  """ecg [time, len(leads)] mV -> [NUM_BLOCKS * 12] float32 block means of the first
  10 s less each lead's mean (so a copy with a baseline offset still matches), in
  `records.LEADS` order; NaN for absent leads and for blocks past the end."""
  block = int(round(BLOCK_SECONDS * sampling_rate))
  x = np.asarray(ecg, np.float32)[:block * NUM_BLOCKS]
  count = len(x) // block
  out = np.full((NUM_BLOCKS, len(records.LEADS)), np.nan, np.float32)
  columns = [records.LEADS.index(lead) for lead in leads]
  means = x[:count * block].reshape(count, block, -1).mean(axis=1)
  out[:count, columns] = means - means.mean(axis=0, keepdims=True)  # No DC offset.
  return out.reshape(-1)


class Reference:
  """Fingerprints of the reference (PTB-XL) records, with a hash index.

  Attributes:
    ecg_ids, folds: [N] int64 / int32 of the reference records.
    fingerprints: [N, NUM_BLOCKS * 12] float32.
  """

  def __init__(self, ecg_ids: np.ndarray, folds: np.ndarray, fingerprints: np.ndarray,
               root: str = ""):
    self.ecg_ids = np.asarray(ecg_ids, np.int64)
    self.folds = np.asarray(folds, np.int32)
    self.fingerprints = np.asarray(fingerprints, np.float32)
    self.root = str(root)
    self._row_of_id = {int(e): i for i, e in enumerate(self.ecg_ids)}
    finite = np.all(np.isfinite(self.fingerprints), axis=0) if len(self.ecg_ids) else []
    columns = np.flatnonzero(finite)
    variance = np.nanvar(self.fingerprints[:, columns], axis=0) if len(columns) else []
    self.key_columns = columns[np.argsort(variance)[::-1][:NUM_KEY_FEATURES]]
    self._buckets: dict[tuple, list[int]] = {}
    keys = np.floor(self.fingerprints[:, self.key_columns] / BUCKET_MV).astype(np.int64)
    for row, key in enumerate(map(tuple, keys)):
      self._buckets.setdefault(key, []).append(row)

  def __len__(self) -> int:
    return len(self.ecg_ids)

  def row_of_id(self, ecg_id: int) -> int | None:
    return self._row_of_id.get(int(ecg_id))

  def _candidates(self, fp: np.ndarray) -> np.ndarray:
    values = fp[self.key_columns]
    if not np.all(np.isfinite(values)):
      return np.arange(len(self))  # Reduced leads or a short record: compare with all.
    scaled = values / BUCKET_MV
    options = []
    for v in scaled:
      base = int(np.floor(v))
      option = [base]
      if v - base < TOLERANCE_MV / BUCKET_MV:
        option.append(base - 1)
      if base + 1 - v < TOLERANCE_MV / BUCKET_MV:
        option.append(base + 1)
      options.append(option)
    rows = [r for key in itertools.product(*options) for r in self._buckets.get(key, ())]
    return np.asarray(rows, np.int64)

  def match(self, fp: np.ndarray) -> int | None:
    """The reference row whose fingerprint equals `fp` within TOLERANCE_MV, or None.

    A featureless fingerprint (block means varying by less than 3 x TOLERANCE_MV,
    e.g. a high-passed near-silent record) matches nothing: it could not be told
    apart from other featureless signals."""
    if not np.nanstd(fp) >= 3 * TOLERANCE_MV:
      return None
    rows = self._candidates(fp)
    if not len(rows):
      return None
    diff = np.abs(self.fingerprints[rows] - fp[None, :])
    compared = np.isfinite(diff)
    close = np.all(np.where(compared, diff <= TOLERANCE_MV, True), axis=1)
    close &= compared.sum(axis=1) >= MIN_BLOCKS
    hits = rows[close]
    return int(hits[0]) if len(hits) else None

  def save(self, path: str | pathlib.Path) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ecg_ids=self.ecg_ids, folds=self.folds,
             fingerprints=self.fingerprints, root=np.array(self.root))
    tmp.replace(path)

  @classmethod
  def load(cls, path: str | pathlib.Path) -> "Reference":
    with np.load(path) as f:
      return cls(f["ecg_ids"], f["folds"], f["fingerprints"], str(f["root"]))


_PTBXL = None  # The reference reader, built once per worker process.


def _init_reference_worker(ptbxl_dir: str, sampling_rate: int) -> None:
  global _PTBXL
  from crema_jax.data.readers import ptbxl  # pylint: disable=g-import-not-at-top
  _PTBXL = ptbxl.PTBXL(ptbxl_dir, sampling_rate=sampling_rate)


def _fingerprint_keys(keys: list[str]) -> list[tuple[int, int, np.ndarray]]:
  out = []
  for key in keys:
    try:
      record = _PTBXL.read(key)
    except records.RecordError:
      continue  # Unreadable reference records cannot leak.
    out.append((record.ecg_id, record.fold,
                fingerprint(record.ecg, record.sampling_rate)))
  return out


def build_reference(ptbxl_dir: str | pathlib.Path, sampling_rate: int,
                    cache: str | pathlib.Path | None = None,
                    show_progress: bool = True, num_workers: int = 1) -> Reference:
  """Fingerprints every readable record of a PTB-XL folder at `sampling_rate`, in
  `num_workers` processes (cached in `cache` when given: about 50 MB for PTB-XL's
  21,799 records, built once)."""
  if cache is not None and pathlib.Path(cache).is_file():
    reference = Reference.load(cache)
    if reference.root == str(ptbxl_dir):
      return reference
  _init_reference_worker(str(ptbxl_dir), sampling_rate)  # Checks the folder first.
  keys = _PTBXL.keys()
  size = max(1, min(200, -(-len(keys) // (4 * max(1, num_workers)))))
  chunks = [keys[i:i + size] for i in range(0, len(keys), size)]
  found = []
  with tqdm.tqdm(total=len(keys), desc="fingerprint PTB-XL", unit="rec",
                 disable=not show_progress) as bar:
    if num_workers <= 1 or len(chunks) <= 1:
      for chunk in chunks:
        found.extend(_fingerprint_keys(chunk))
        bar.update(len(chunk))
    else:
      ctx = multiprocessing.get_context("spawn")
      with ctx.Pool(min(num_workers, len(chunks)), initializer=_init_reference_worker,
                    initargs=(str(ptbxl_dir), sampling_rate)) as pool:
        for chunk, result in zip(chunks, pool.imap(_fingerprint_keys, chunks)):
          found.extend(result)
          bar.update(len(chunk))
  reference = Reference(
      np.array([f[0] for f in found], np.int64), np.array([f[1] for f in found], np.int32),
      np.array([f[2] for f in found], np.float32).reshape(len(found), -1), str(ptbxl_dir))
  if cache is not None:
    reference.save(cache)
  return reference


class Exclusion:
  """Matches the records of one source against a Reference (picklable, for workers).

  Args:
    reference: the PTB-XL fingerprints.
    exclude_folds: matches in these folds are excluded; others are kept and counted.
    reader: the source's reader name ("ptbxl" matches by its own ecg_id).
    leads: the source's leads (the columns of its records).
  """

  def __init__(self, reference: Reference, exclude_folds: Sequence[int], reader: str,
               leads: Sequence[str] = records.LEADS):
    self.reference = reference
    self.exclude_folds = tuple(int(f) for f in (exclude_folds or ALL_FOLDS))
    self.reader = reader
    self.leads = tuple(leads)

  def settings(self) -> dict:
    return {"reference": self.reference.root, "reference_records": len(self.reference),
            "exclude_folds": list(self.exclude_folds)}

  def _row_by_id(self, record: records.Record) -> int | None:
    if self.reader == "ptbxl":
      return self.reference.row_of_id(record.ecg_id)
    stem = pathlib.PurePosixPath(record.record_name.split("#")[0]).name
    found = _CHALLENGE_NAME.fullmatch(stem)
    return self.reference.row_of_id(int(found.group(1))) if found else None

  def check(self, record: records.Record) -> dict | None:
    """None, or {"ptbxl_ecg_id", "fold", "how" ("id"/"fingerprint"), "excluded"}."""
    how, row = "id", self._row_by_id(record)
    if row is None:
      how, row = "fingerprint", self.reference.match(
          fingerprint(record.ecg, record.sampling_rate, self.leads))
    if row is None:
      return None
    fold = int(self.reference.folds[row])
    return {"ptbxl_ecg_id": int(self.reference.ecg_ids[row]), "fold": fold, "how": how,
            "excluded": fold in self.exclude_folds}


def summarize(matches: list[dict], exclusion: Exclusion | None) -> dict | None:
  """The manifest's `leakage` entry of one source from its matches."""
  if exclusion is None:
    return None
  excluded = [m for m in matches if m["excluded"]]
  kept = [m for m in matches if not m["excluded"]]

  def count(items, field):
    values, counts = np.unique([str(m[field]) for m in items], return_counts=True)
    return {v: int(n) for v, n in zip(values, counts)}

  return {**exclusion.settings(), "num_excluded": len(excluded),
          "excluded_by": count(excluded, "how"),
          "excluded_folds": count(excluded, "fold"),
          "overlap_kept_folds": count(kept, "fold")}


# ------------------------------------------------------------------ the probe's check
def pretraining_overlap(data_config, test_folds: Sequence[int] = (10,)) -> dict:
  """How the prepared pretraining data of `data_config` meets the PTB-XL `test_folds`.

  Returns {"status": "clean" | "overlap" | "unchecked", "test_folds": [...],
  "overlap": {source: count}, "excluded": {source: count}, "unchecked": [sources]}.
  A PTB-XL source overlaps with its pretraining records in the test folds; any other
  source with the copies of test-fold records that prepare found and kept; a source
  prepared without a PTB-XL reference is "unchecked".
  """
  from crema_jax.data import storage  # pylint: disable=g-import-not-at-top
  prepared = storage.PreparedSource(data_config.data_dir, data_config.name)
  members = prepared.members or [prepared]
  test = {int(f) for f in test_folds}
  report = {"status": "clean", "test_folds": sorted(test), "overlap": {},
            "excluded": {}, "unchecked": []}
  for member in members:
    manifest, name = member.manifest, member.manifest["source"]
    if manifest.get("source_reader", manifest["source"]) == "ptbxl":
      folds = tuple(data_config.pretrain_folds)
      positions = (storage.pretrain_positions(member, folds) if prepared.members else
                   storage.fold_positions(member, folds))
      found = int(np.isin(member.index["fold"][positions], list(test)).sum())
    else:
      leakage = manifest.get("leakage")
      if leakage is None:
        report["unchecked"].append(name)
        continue
      found = sum(n for f, n in leakage["overlap_kept_folds"].items() if int(f) in test)
    leakage = manifest.get("leakage") or {}
    report["excluded"][name] = int(leakage.get("num_excluded", 0))
    if found:
      report["overlap"][name] = found
  if report["overlap"]:
    report["status"] = "overlap"
  elif report["unchecked"]:
    report["status"] = "unchecked"
  return report


def check_pretraining_data(data_config, test_folds: Sequence[int] = (10,),
                           allow: bool = False) -> dict:
  """`pretraining_overlap`, raising LeakageError unless `allow` when the pretraining
  data holds test-fold ECGs ("overlap") or holds a source nobody checked against
  PTB-XL ("unchecked": a CinC 2021 corpus prepared without `data.leakage.ptbxl_dir`
  holds every PTB-XL ECG as an `HR*` record)."""
  return refuse(pretraining_overlap(data_config, test_folds),
                f"{data_config.data_dir}/{data_config.name}", allow)


def refuse(report: dict, where: str, allow: bool = False) -> dict:
  """LeakageError unless `allow` when a `pretraining_overlap` report (computed now, or
  recorded at pretraining and read from a checkpoint) shows test-fold ECGs or an
  unchecked source in the pretraining data of `where`; else the report."""
  if report["status"] == "overlap" and not allow:
    found = ", ".join(f"{n} from {s}" for s, n in report["overlap"].items())
    raise LeakageError(
        f"the pretraining data of {where} holds PTB-XL test-fold "
        f"{report['test_folds']} ECGs ({found}): probing it on those folds would score "
        "ECGs the encoder saw. Prepare the corpus with data.leakage.ptbxl_dir set (and "
        "the test folds in exclude_folds), or pass allow=True to probe anyway")
  if report["status"] == "unchecked" and not allow:
    raise LeakageError(
        f"the pretraining data of {where} holds source(s) {report['unchecked']} that "
        "were never checked against PTB-XL: they may hold copies of its test-fold ECGs "
        "(CinC 2021 holds all of PTB-XL). Prepare them with data.leakage.ptbxl_dir set, "
        "or pass allow=True (allow_test_overlap) to probe anyway")
  return report


def check_checkpoint(workdir: str | pathlib.Path, test_folds: Sequence[int] = (10,),
                     allow: bool = False) -> dict:
  """The check for a pretraining run directory (its `config.json` names the data)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  return check_pretraining_data(ml_collections.ConfigDict(config["data"]), test_folds,
                                allow)
