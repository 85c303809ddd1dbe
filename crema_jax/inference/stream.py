"""Checked records -> the batches of views the checkpoint reads (main process side of
`reading`): the centred crop, zero-padded, the input's leads at the checkpoint's
places."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from crema_jax.inference import reading
from crema_jax.input import views

if TYPE_CHECKING:
  from crema_jax.package import preprocessing


def batches(items: Iterator[reading.Item], pre: preprocessing.Preprocessing,
            batch_size: int, skipped: list[dict],
            leads: Sequence[str] | None = None) -> Iterator[dict]:
  """Batches of the readable items: {"view" [b, len(pre.leads), seq_len] float32 mV
  (the centred crop, zero-padded; with `leads`, the items' leads, at their places and
  the others zero), "valid" [b] int32, "key" [b], the records' fields, and
  "files_done": files finished since the last batch (for progress)}; the last may be
  smaller. Unreadable items are appended to `skipped`."""
  buffer, files_done = [], 0
  columns = [pre.leads.index(lead) for lead in (leads or pre.leads)]

  def emit():
    crops, valid = views.centred_crops([i.stored for i in buffer], pre.seq_len)
    view = np.zeros((len(crops), len(pre.leads), crops.shape[2]), np.float32)
    view[:, columns] = crops
    batch = {"view": view, "valid": valid, "files_done": files_done,
             "key": np.array([i.key for i in buffer])}
    for field in buffer[0].fields:
      batch[field] = np.array([i.fields[field] for i in buffer])
    buffer.clear()
    return batch

  for item in items:
    files_done += item.last_of_file
    if item.skipped is not None:
      skipped.append(item.skipped)
      continue
    buffer.append(item)
    if len(buffer) == batch_size:
      yield emit()
      files_done = 0
  if buffer:
    yield emit()
