"""What a checkpoint expects of a signal, from its pretraining config. No jax here:
the file-reading worker processes import it."""

from __future__ import annotations

import dataclasses

import ml_collections

from crema_jax.data import records


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What a checkpoint expects of a signal (from its pretraining config).

  Attributes:
    sampling_rate: Hz; readers resample to it.
    leads: the lead order of the input's last axis.
    seq_len: samples per view; a longer ECG gives its centred `seq_len` samples, a
      shorter one is zero-padded at the end (`valid` says how much is signal).
    normalize: "per_lead" (each lead to zero mean, unit std over its valid samples,
      inside `encode`) or "none".
    max_amplitude_mv: a lead beyond this is refused as a gain or unit error (0: off).
    min_seconds: shorter records are refused.
  """
  sampling_rate: int
  leads: tuple[str, ...]
  seq_len: int
  normalize: str
  max_amplitude_mv: float
  min_seconds: float

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> "Preprocessing":
    data = config.data
    return cls(int(data.sampling_rate), tuple(data.get("leads") or records.LEADS),
               int(data.seq_len), str(data.normalize),
               float(data.get("max_amplitude_mv", records.MAX_AMPLITUDE_MV)),
               float(data.get("min_seconds", 0.0)))

  @property
  def seconds(self) -> float:
    return self.seq_len / self.sampling_rate

  def describe(self) -> dict:
    """The model card's preprocessing entry."""
    return {
        "sampling_rate_hz": self.sampling_rate, "leads": list(self.leads),
        "units": "mV", "seq_len": self.seq_len, "seconds": self.seconds,
        "crop": (f"the centred {self.seq_len} samples of a longer ECG; a shorter one "
                 "zero-padded at the end and its padding left out of the pooling"),
        "normalisation": ("per lead: zero mean and unit std over the signal's samples "
                          "(a flat lead becomes zeros)" if self.normalize == "per_lead"
                          else "none"),
        "refused": (f"a lead beyond {self.max_amplitude_mv:g} mV, non-finite values, "
                    f"records shorter than {self.min_seconds:g} s, missing leads"),
    }
