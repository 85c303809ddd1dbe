"""The registry of raw-source readers: `data.source` in a config names one of these.

| `data.source`  | reader                  | the folder as published                          |
|----------------|-------------------------|--------------------------------------------------|
| `ptbxl`        | ptbxl.PTBXL             | ptbxl_database.csv, records100/, records500/     |
| `wfdb`         | wfdb_folder.WFDBFolder  | any tree of WFDB `.hea` + `.dat`/`.mat`          |
| `cinc`         | cinc.CinC               | PhysioNet/CinC 2020-21 `.hea` (# Dx) + `.mat`    |
| `mimic_iv_ecg` | mimic_ecg.MimicIVECG    | record_list.csv + files/ (WFDB)                  |
| `code15`       | code15.HDF5Exams        | exams.csv + exams_part*.hdf5                     |
| `samitrop`     | code15.HDF5Exams        | exams.csv + exams.hdf5                           |
| `dicom`        | dicom.DicomECG          | *.dcm 12-lead ECG Waveform Storage               |
| `ecg_files`    | ecg_files.ECGFiles      | any file ecgdatakit reads: aECG, MUSE, EDF, ...  |

A reader is built from the `data` config fields source, raw_dir, name, sampling_rate,
min_seconds and leads (wfdb and ecg_files also lead_aliases; ecg_files
derive_limb_leads, when the config has it); `window_seconds > 0` cuts long recordings
into windows (`windows.Windowed`, WFDB-based readers and ecg_files). Readers of
lead-named files (wfdb, cinc, dicom, ecg_files) read just the `data.leads` they are
asked for, so a 2-lead Holter serves a 2-lead config; the 12-lead-only formats (ptbxl,
mimic_iv_ecg, code15, samitrop) are read whole and cut to `data.leads` (`SelectLeads`).
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from crema_jax.data.readers import cinc
from crema_jax.data.readers import code15
from crema_jax.data.readers import dicom
from crema_jax.data.readers import ecg_files
from crema_jax.data.readers import mimic_ecg
from crema_jax.data.readers import ptbxl
from crema_jax.data.readers import wfdb_folder
from crema_jax.data.readers import windows
from crema_jax.data import records


def _leads(cfg) -> tuple[str, ...]:
  return records.check_leads(cfg.get("leads") or records.LEADS)


class SelectLeads:
  """A 12-lead reader whose records are cut to a subset of leads: [time, len(leads)]."""

  def __init__(self, base: records.Source, leads):
    self.base = base
    self.leads = records.check_leads(leads)
    self.name = base.name
    self.root = getattr(base, "root", "")
    self.sampling_rate = base.sampling_rate
    self._columns = [records.LEADS.index(lead) for lead in self.leads]

  def keys(self):
    return self.base.keys()

  def read(self, key: str) -> records.Record:
    record = self.base.read(key)
    record.ecg = record.ecg[:, self._columns]
    return record


def _with_leads(build):
  """Wraps a 12-lead reader's builder so that it serves `data.leads`."""
  def build_with_leads(cfg):
    source = build(cfg)
    return source if _leads(cfg) == records.LEADS else SelectLeads(source, _leads(cfg))
  return build_with_leads


def lead_aliases(text: str) -> dict[str, str]:
  """`"MLII=II, ML5=V5"` -> {"MLII": "II", "ML5": "V5"} (`data.lead_aliases`)."""
  aliases = {}
  for part in (text or "").split(","):
    if part.strip():
      if "=" not in part:
        raise ValueError(f"data.lead_aliases part {part!r} is not NAME=LEAD")
      name, lead = (p.strip() for p in part.split("=", 1))
      aliases[name] = lead
  return aliases


def _ptbxl(cfg):
  return ptbxl.PTBXL(cfg.raw_dir, sampling_rate=cfg.sampling_rate,
                     min_seconds=cfg.min_seconds)


def _wfdb(cfg):
  return wfdb_folder.WFDBFolder(cfg.raw_dir, sampling_rate=cfg.sampling_rate,
                                name=cfg.name, min_seconds=cfg.min_seconds,
                                leads=_leads(cfg),
                                lead_aliases=lead_aliases(cfg.get("lead_aliases", "")))


def _ecg_files(cfg):
  return ecg_files.ECGFiles(cfg.raw_dir, sampling_rate=cfg.sampling_rate,
                            name=cfg.name, leads=_leads(cfg),
                            min_seconds=cfg.min_seconds,
                            lead_aliases=lead_aliases(cfg.get("lead_aliases", "")),
                            derive_limb_leads=bool(cfg.get("derive_limb_leads", False)))


def _hdf5(hdf5_glob):
  def build(cfg):
    return code15.HDF5Exams(cfg.raw_dir, sampling_rate=cfg.sampling_rate, name=cfg.name,
                            hdf5_glob=hdf5_glob, min_seconds=cfg.min_seconds)
  return build


def _mimic(cfg):
  return mimic_ecg.MimicIVECG(cfg.raw_dir, sampling_rate=cfg.sampling_rate,
                              name=cfg.name, min_seconds=cfg.min_seconds)


READERS: dict[str, Callable[..., records.Source]] = {
    "ptbxl": _with_leads(_ptbxl),
    "wfdb": _wfdb,
    "cinc": lambda cfg: cinc.CinC(cfg.raw_dir, sampling_rate=cfg.sampling_rate,
                                  name=cfg.name, leads=_leads(cfg),
                                  min_seconds=cfg.min_seconds),
    "mimic_iv_ecg": _with_leads(_mimic),
    "code15": _with_leads(_hdf5(None)),
    "samitrop": _with_leads(_hdf5("exams.hdf5")),
    "dicom": lambda cfg: dicom.DicomECG(cfg.raw_dir, sampling_rate=cfg.sampling_rate,
                                        name=cfg.name, leads=_leads(cfg),
                                        min_seconds=cfg.min_seconds),
    "ecg_files": _ecg_files,
}


def build_source(data_config: ml_collections.ConfigDict) -> records.Source:
  """The reader named by `data_config.source` over `data_config.raw_dir` (cut into
  windows when `data_config.window_seconds` > 0)."""
  if data_config.source not in READERS:
    raise ValueError(f"data.source={data_config.source!r} is not one of "
                     f"{sorted(READERS)}")
  if not data_config.raw_dir:
    raise ValueError("data.raw_dir is empty: point it at the downloaded dataset folder")
  source = READERS[data_config.source](data_config)
  window = data_config.get("window_seconds", 0)
  if window:
    source = windows.Windowed(source, window,
                              data_config.get("window_stride_seconds") or window,
                              data_config.get("long_seconds"))
  return source
