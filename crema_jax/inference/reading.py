"""Someone's ECG files -> checked records, read in worker processes, in order.

  folder --reader (registry: ecg_files, dicom, wfdb, ...)--> records (checked as prepare
  checks them) --worker processes--> centred crops --> batches

Files are read in `workers` processes while the main process runs the model, so on a
CPU the two overlap; results come back in file order. A file that cannot be read is
skipped and reported (`records.skip_report`), never passed on. Recordings longer than
`long_seconds` are cut into windows of the view's length (`windows.Windowed`), each an
ECG of its own (`key#wI`).
"""

from __future__ import annotations

from concurrent import futures
import collections
import dataclasses
import multiprocessing
from typing import Iterator, Sequence

import ml_collections
import numpy as np

from crema_jax.data.readers import registry
from crema_jax.data.readers import windows
from crema_jax.data import records
from crema_jax.inference import preprocessing


def input_leads(config: ml_collections.ConfigDict,
                pre: preprocessing.Preprocessing) -> tuple[str, ...]:
  """The leads read from the files: `config.input_leads`, or all the checkpoint's.
  Fewer leads than the checkpoint's are placed at their positions and the others
  zeroed (as the evaluation's reduced-lead mode does), or ValueError naming any lead
  the checkpoint does not have."""
  leads = tuple(config.get("input_leads") or pre.leads)
  unknown = [lead for lead in leads if lead not in pre.leads]
  if unknown:
    raise ValueError(f"input_leads {unknown} are not among the checkpoint's leads "
                     f"{list(pre.leads)}")
  return leads


def build_source(config: ml_collections.ConfigDict,
                 pre: preprocessing.Preprocessing) -> records.Source:
  """The reader `config.input_source` over `config.input`, at the checkpoint's rate,
  reading `input_leads`; long recordings windowed when the reader can read spans."""
  data = ml_collections.ConfigDict({
      "source": config.input_source, "raw_dir": config.input, "name": "input",
      "sampling_rate": pre.sampling_rate, "min_seconds": pre.min_seconds,
      "leads": input_leads(config, pre), "lead_aliases": config.lead_aliases,
      "derive_limb_leads": config.derive_limb_leads})
  source = registry.build_source(data)
  if config.long_seconds > 0 and callable(getattr(source, "read_span", None)):
    source = windows.Windowed(source, pre.seconds,
                              config.window_stride_seconds or pre.seconds,
                              config.long_seconds)
  return source


@dataclasses.dataclass
class Item:
  """One key's outcome: `stored` [time, leads] float16 mV and its record's fields, or
  `skipped` ({"key", "path", "reason"})."""
  key: str
  stored: np.ndarray | None = None
  fields: dict | None = None
  skipped: dict | None = None


_SOURCE, _PRE = None, None


def _init_worker(source: records.Source, pre: preprocessing.Preprocessing) -> None:
  global _SOURCE, _PRE
  _SOURCE, _PRE = source, pre


def _read(keys: Sequence[str]) -> list[Item]:
  out = []
  leads = tuple(getattr(_SOURCE, "leads", records.LEADS))
  for key in keys:
    try:
      record, stored = records.checked_record(_SOURCE, key, _PRE.max_amplitude_mv,
                                              leads)
    except Exception as e:  # pylint: disable=broad-except
      out.append(Item(key, skipped=records.skip_report(key, e)))
      continue
    out.append(Item(key, stored, {
        "source_file": record.record_name or key, "ecg_id": record.ecg_id,
        "patient_id": record.patient_id, "age": record.age, "sex": record.sex,
        "seconds": record.ecg.shape[0] / record.sampling_rate}))
  return out


def read_items(source: records.Source, keys: Sequence[str],
               pre: preprocessing.Preprocessing, workers: int,
               chunk: int = 16) -> Iterator[Item]:
  """Every key's `Item`, in order; read in `workers` processes (0: in this one), at
  most 2 x workers chunks ahead of the consumer."""
  chunks = [keys[i:i + chunk] for i in range(0, len(keys), chunk)]
  if workers <= 0 or len(chunks) <= 1:
    _init_worker(source, pre)
    try:
      for part in chunks:
        yield from _read(part)
    finally:
      _init_worker(None, None)
    return
  with futures.ProcessPoolExecutor(
      min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"),
      initializer=_init_worker, initargs=(source, pre)) as pool:
    pending = collections.deque()
    todo = iter(chunks)
    for part in todo:
      pending.append(pool.submit(_read, part))
      if len(pending) >= 2 * workers:
        break
    while pending:
      done = pending.popleft().result()
      part = next(todo, None)
      if part is not None:
        pending.append(pool.submit(_read, part))
      yield from done
