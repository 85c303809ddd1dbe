"""The PhysioNet/Computing in Cardiology Challenge 2020-2021 sets, as published.

CPSC, CPSC-Extra, INCART (St Petersburg), PTB, PTB-XL, Georgia, Chapman-Shaoxing and
Ningbo, each a folder tree of WFDB headers with MATLAB signal files:

  A0001.hea   A0001 12 500 7500 ...
              A0001.mat 16+24 1000/mV 16 0 28 -1716 0 I      (one line per lead)
              # Age: 74
              # Sex: Male
              # Dx: 59118001,164889003                        (SNOMED-CT codes)
  A0001.mat   {'val': int16 [leads, time]}; physical = (val - baseline) / gain
              (MATLAB 4 as published: '16+24' in the header skips its matrix header)

Rates run from 257 Hz (INCART, 30-minute records: wrap the reader in
`windows.Windowed`) to 1000 Hz (PTB); all are resampled to the target rate. So no rate
or length is imposed, but the header checks of `wfdb_io` apply: a rate, gain or count
that does not parse, gain 0, units other than V/mV/uV are RecordErrors.

Labels. Every Dx code is kept as a source label in `scp_codes` ({"164889003": 1.0}).
The superclasses take only codes whose PTB-XL counterpart is a diagnostic statement of
that class (resources/cinc_dx_codes.csv, `superclass` column): MI (MI, AMI, AnMI,
OldMI), STTC (NSSTTA, ischaemia codes, LQT), CD (AV blocks, bundle branch and
fascicular blocks, NSIVCB, WPW), HYP (ventricular hypertrophy, atrial enlargement).
NORM is set only when sinus rhythm (426783006) is the record's one and only code, as
the Challenge organisers mapped PTB-XL's NORM to sinus rhythm. Rhythm and form codes
(AF, PAC, TAb, ...) map to no superclass. Codes missing from the table are kept and
reported in the record's `notes` (counted in the prepare manifest), never an error.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import pandas as pd

from crema_jax.data.readers import wfdb_folder
from crema_jax.data.readers import wfdb_io
from crema_jax.data import records

DX_TABLE = pathlib.Path(__file__).parents[1] / "resources" / "cinc_dx_codes.csv"
SINUS_RHYTHM = "426783006"


@functools.cache
def dx_table() -> pd.DataFrame:
  """The Challenge's SNOMED-CT codes indexed by code (str): abbreviation, description,
  superclass ("" where none)."""
  table = pd.read_csv(DX_TABLE, dtype=str, keep_default_na=False)
  return table.set_index("snomed_code")


def parse_dx(text: str | None) -> list[str]:
  """`"59118001, 164889003"` -> ["59118001", "164889003"] (order kept, repeats
  dropped); blanks and "Unknown" give []."""
  codes = []
  for part in (text or "").replace(";", ",").split(","):
    part = part.strip()
    if part and part.lower() not in ("unknown", "nan") and part not in codes:
      codes.append(part)
  return codes


def classify(codes: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
  """(superclasses, known abbreviations, unknown codes) of a record's Dx codes."""
  table = dx_table()
  known = [c for c in codes if c in table.index]
  unknown = [c for c in codes if c not in table.index]
  classes = {table.at[c, "superclass"] for c in known} - {"", "NORM"}
  if list(codes) == [SINUS_RHYTHM]:
    classes.add("NORM")
  return sorted(classes), [table.at[c, "abbreviation"] for c in known], unknown


class CinC(wfdb_folder.WFDBFolder):
  """A PhysioNet/CinC 2020-2021 folder (any of its sets, or all) as a `records.Source`.

  Args:
    root: the folder; `.hea` files are found recursively (links to folders
      followed, each folder once: `base.list_files`).
    sampling_rate: the target rate.
    name: the dataset name written into records.
    leads: the leads to read (default the standard 12, in order).
    min_seconds: shorter records are refused.

  Each record is its own patient (the Challenge publishes no patient ids).
  """

  def __init__(self, root: str | pathlib.Path, sampling_rate: int = 500,
               name: str = "cinc2021", leads: Sequence[str] = records.LEADS,
               min_seconds: float = 5.0):
    super().__init__(root, sampling_rate=sampling_rate, name=name,
                     min_seconds=min_seconds, leads=leads)

  def read(self, key: str, span: tuple[float, float] | None = None) -> records.Record:
    self.refuse_unlisted(key)
    path = self.root / key
    wave = wfdb_io.read_record(path, self.sampling_rate, self.leads, span=span)
    ecg = records.check_signal(wave.ecg, str(path.with_name(path.name + ".hea")),
                               self.sampling_rate, self.min_seconds, leads=self.leads)
    fields = wfdb_folder.header_fields(wave.comments)
    codes = parse_dx(fields.get("dx"))
    classes, abbreviations, unknown = classify(codes)
    return records.Record(
        ecg=ecg, sampling_rate=self.sampling_rate, ecg_id=wfdb_folder.stable_id(key),
        patient_id=self._patient_id(key, fields), source=self.name, record_name=key,
        age=wfdb_folder.age_from_text(fields.get("age")),
        sex=wfdb_folder.sex_from_text(fields.get("sex")),
        labels=records.labels_from_classes(classes),
        scp_codes=records.scp_codes_json({c: 1.0 for c in codes}),
        subclasses=",".join(abbreviations),
        notes=tuple(f"unknown Dx code {c}" for c in unknown))
