"""Fuzzing the readers: damaged copies of valid folders give a clear error or a sound
record, never a crash or an unphysiological signal.

Every reader gets a small valid folder in its dataset's published layout (2-4
records). Each case copies it, damages one file (seeded: the seed is in the test id)
by truncation, flipped bytes, an edited WFDB header field, CSV cell, HDF5 dataset,
DICOM element, XML element (GE MUSE, HL7 aECG) or EDF header field, builds the reader
with `registry.build_source` and reads every key as `prepare` does. Allowed outcomes,
per key:
  (a) a `records.RecordError` (building the reader: a `SourceError`) whose message
      names the damaged file or the record read;
  (b) a record that passes `records.check_signal` and `records.stored_signal`:
      float32 [time, leads] at the configured rate, finite as float16, within 30 mV.
Damages that a correct reader can always detect (`Damage.refuse`: a gain of 0, a
missing lead, a truncated signal file, ...) must give (a). Records whose files were
not damaged must read exactly as they did before. A case that shows a reader bug is
listed in `READER_BUGS` (a strict xfail).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import os
import pathlib
import pickle
import random
import re
import shutil
from typing import Callable
import zlib

import h5py
import ml_collections
import numpy as np
import pandas as pd
import pydicom
from pydicom.data import get_testdata_file
import pytest
import scipy.io
from scipy import signal as scipy_signal
import wfdb

import ecg_fixtures  # In tests/integration/, the test's folder.

from crema_jax.data.readers import registry
from crema_jax.data import records
from crema_jax.data import synthetic

# Damaged files make pydicom, h5py and numpy warn; the outcomes are what is checked.
pytestmark = pytest.mark.filterwarnings("ignore")

DICOM_ECG = get_testdata_file("waveform_ecg.dcm")
RATE, MIN_SECONDS = 500, 5.0
PTBXL_NAMES = synthetic.WFDB_LEAD_NAMES  # I, II, III, AVR, AVL, AVF, V1..V6.
MIMIC_NAMES = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5",
               "V6"]  # MIMIC-IV-ECG's headers list aVF before aVL.
CODE15_COLUMNS = ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB",
                  "LBBB", "SB", "ST", "AF", "patient_id", "death", "timey",
                  "normal_ecg", "trace_file"]
MIMIC_A = "files/p1000/p10000032/s40689238/40689238"
MIMIC_B = "files/p1001/p10010058/s43852530/43852530"
AECG_ORDER = ["V1", "aVR", "I", "II", "V3", "aVL", "aVF", "V2", "III", "V4", "V6", "V5"]
MUSE_LEADS = ecg_fixtures.MUSE_LEADS  # I, II, V1..V6: no III, aVR, aVL, aVF.
LIMB_LEADS = ("III", "aVR", "aVL", "aVF")  # ecg_files derives them from I and II.


# The valid folders.


@dataclasses.dataclass
class Template:
  """A valid folder of one reader and what it reads as.

  Attributes:
    root: the folder (never damaged: each case works on a copy).
    config: the `data` config fields, without raw_dir.
    files: {key without window suffix: the files (relative) that record reads}.
    tables: files (relative) that every record depends on.
    samples: the exact length each record (each window) must have, when the
      format fixes it.
    pristine: {key: ecg} as read from the valid folder.
  """

  root: pathlib.Path
  config: dict
  files: dict[str, tuple[str, ...]]
  tables: tuple[str, ...] = ()
  samples: int | None = None
  pristine: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def leads(self) -> tuple[str, ...]:
    return tuple(self.config.get("leads") or records.LEADS)


def _ecgs(directory: pathlib.Path) -> list[np.ndarray]:
  """Two synthetic 10 s, 500 Hz, 12-lead ECGs in mV (`synthetic`'s dipole model)."""
  root = synthetic.write_synthetic_ptbxl(directory, num_patients=2, seed=5,
                                         max_records_per_patient=1)
  table = pd.read_csv(root / "ptbxl_database.csv")
  return [wfdb.rdrecord(str(root / name)).p_signal for name in table["filename_hr"]]


def _resample(ecg: np.ndarray, rate: int) -> np.ndarray:
  return scipy_signal.resample_poly(ecg, rate, RATE, axis=0)


def _wrsamp(directory: pathlib.Path, name: str, ecg: np.ndarray, rate: int, names,
            fmt: str = "16", gain: float = 200.0, **kwargs) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  n = ecg.shape[1]
  wfdb.wrsamp(name, fs=rate, units=["mV"] * n, sig_name=list(names),
              p_signal=ecg, fmt=[fmt] * n, adc_gain=[gain] * n, baseline=[0] * n,
              write_dir=str(directory), **kwargs)


def _columns(ecg: np.ndarray, names) -> np.ndarray:
  """`ecg` [time, 12] in LEADS order -> the columns of `names` (any spelling)."""
  canonical = {n.lower(): n for n in records.LEADS}
  return ecg[:, [records.LEADS.index(canonical[n.lower()]) for n in names]]


def _ptbxl(root: pathlib.Path, ecgs, shared_data) -> Template:
  """synthetic's PTB-XL folder: 2 records, records100/ and records500/."""
  del ecgs, shared_data
  synthetic.write_synthetic_ptbxl(root, num_patients=2, seed=7,
                                  max_records_per_patient=1)
  table = pd.read_csv(root / "ptbxl_database.csv")
  files = {str(i): (f"{name}.hea", f"{name}.dat")
           for i, name in zip(table["ecg_id"], table["filename_hr"])}
  return Template(root, {"source": "ptbxl"}, files,
                  tables=("ptbxl_database.csv", "scp_statements.csv"), samples=5000)


def _wfdb(root: pathlib.Path, ecgs, shared_data) -> Template:
  """a500: format 16, 500 Hz, PTB-XL lead names; sub/b250: format 212, 250 Hz,
  lower-case names in another order."""
  del shared_data
  _wrsamp(root, "a500", ecgs[0], 500, PTBXL_NAMES,
          comments=["Age: 54", "Sex: Male"])
  names = ["v1", "avr", "i", "ii", "v3", "avl", "avf", "v2", "iii", "v4", "v6", "v5"]
  _wrsamp(root / "sub", "b250", _columns(_resample(ecgs[1], 250), names), 250, names,
          fmt="212")
  return Template(root, {"source": "wfdb"},
                  {"a500": ("a500.hea", "a500.dat"),
                   "sub/b250": ("sub/b250.hea", "sub/b250.dat")})


def _challenge_record(directory: pathlib.Path, name: str, ecg: np.ndarray,
                      comments, matlab: str) -> None:
  """A record as the CinC Challenge publishes it: `.hea` text + `.mat` {'val'}."""
  directory.mkdir(parents=True, exist_ok=True)
  val = np.round(ecg * 1000).astype(np.int16).T  # [leads, time], 1000/mV.
  lines = [f"{name} 12 500 {val.shape[1]} 05-Feb-2020 11:39:16"]
  for lead, row in zip(records.LEADS, val):
    checksum = int(np.sum(row.astype(np.int64))) % 65536
    checksum = checksum - 65536 if checksum >= 32768 else checksum
    lines.append(f"{name}.mat 16+24 1000/mV 16 0 {row[0]} {checksum} 0 {lead}")
  lines += [f"# {c}" for c in comments]
  (directory / f"{name}.hea").write_text("\n".join(lines) + "\n")
  scipy.io.savemat(directory / f"{name}.mat", {"val": val}, format=matlab)


def _cinc(root: pathlib.Path, ecgs, shared_data) -> Template:
  """g1/A0001 with a MATLAB 4 `.mat` (as the Challenge ships), g2/E00001 MATLAB 5."""
  del shared_data
  _challenge_record(root / "g1", "A0001", ecgs[0],
                    ["Age: 74", "Sex: Male", "Dx: 59118001,164889003"], "4")
  _challenge_record(root / "g2", "E00001", ecgs[1],
                    ["Age: 50", "Sex: F", "Dx: 426783006"], "5")
  return Template(root, {"source": "cinc"},
                  {"g1/A0001": ("g1/A0001.hea", "g1/A0001.mat"),
                   "g2/E00001": ("g2/E00001.hea", "g2/E00001.mat")})


def _mimic(root: pathlib.Path, ecgs, shared_data) -> Template:
  del shared_data
  for path, ecg in zip((MIMIC_A, MIMIC_B), ecgs):
    directory, name = path.rsplit("/", 1)
    _wrsamp(root / directory, name, _columns(ecg, MIMIC_NAMES), 500, MIMIC_NAMES,
            base_time=datetime.time(8, 44))
  (root / "record_list.csv").write_text(
      "subject_id,study_id,file_name,ecg_time,path\n"
      f"10000032,40689238,40689238,2180-07-23 08:44:00,{MIMIC_A}\n"
      f"10010058,43852530,43852530,2147-05-03 09:42:00,{MIMIC_B}\n")
  return Template(root, {"source": "mimic_iv_ecg"},
                  {p: (f"{p}.hea", f"{p}.dat") for p in (MIMIC_A, MIMIC_B)},
                  tables=("record_list.csv",))


def _tracing(ecg: np.ndarray, seconds: float) -> np.ndarray:
  """[4096, 12] float32 at 400 Hz: `seconds` of the ECG centred, zeros around."""
  wave = _resample(ecg, 400)[:int(seconds * 400)]
  out = np.zeros((4096, 12), np.float32)
  start = (4096 - len(wave)) // 2
  out[start:start + len(wave)] = wave
  return out


def _write_hdf5(path: pathlib.Path, tracings, exam_ids=None) -> None:
  """CODE-15%'s layout; SaMi-Trop's (`tracings` only) when exam_ids is None."""
  tracings = np.stack(tracings)
  with h5py.File(path, "w") as f:
    f.create_dataset("tracings", data=tracings, chunks=(1, *tracings.shape[1:]))
    if exam_ids is not None:
      f.create_dataset("exam_id", data=np.asarray(exam_ids, np.int64))


def _code15(root: pathlib.Path, ecgs, shared_data) -> Template:
  """exams_part0.hdf5: exams 101 (10 s), 102 (7 s) and an unused slot (exam_id 0);
  exams_part1.hdf5: exam 201 (10 s, the same patient as 101)."""
  del shared_data
  root.mkdir(parents=True)
  zero = np.zeros((4096, 12), np.float32)
  _write_hdf5(root / "exams_part0.hdf5",
              [_tracing(ecgs[0], 10), _tracing(ecgs[1], 7), zero], [101, 102, 0])
  _write_hdf5(root / "exams_part1.hdf5", [_tracing(ecgs[1], 10)], [201])
  (root / "exams.csv").write_text("\n".join([
      ",".join(CODE15_COLUMNS),
      "101,67,True,70.2,False,True,False,False,False,True,17,False,2.1,False,"
      "exams_part0.hdf5",
      "102,45,False,44.0,False,False,False,False,False,False,18,,,True,"
      "exams_part0.hdf5",
      "201,68,True,71.0,True,False,False,True,False,False,17,False,1.0,False,"
      "exams_part1.hdf5"]) + "\n")
  files = {f"exams_part0.hdf5/{row}": ("exams_part0.hdf5",) for row in (0, 1)}
  files["exams_part1.hdf5/0"] = ("exams_part1.hdf5",)
  return Template(root, {"source": "code15"}, files, tables=("exams.csv",))


def _samitrop(root: pathlib.Path, ecgs, shared_data) -> Template:
  """exams.hdf5 (`tracings` only): tracing i is the exam of exams.csv's row i."""
  del shared_data
  root.mkdir(parents=True)
  _write_hdf5(root / "exams.hdf5", [_tracing(ecg, 10) for ecg in ecgs])
  (root / "exams.csv").write_text("exam_id,age,is_male,normal_ecg,death,timey\n"
                                  "294669,61,False,False,True,1.5\n"
                                  "5,70,True,True,False,2.0\n")
  return Template(root, {"source": "samitrop"},
                  {f"exams.hdf5/{row}": ("exams.hdf5",) for row in (0, 1)},
                  tables=("exams.csv",))


def _dicom(root: pathlib.Path, ecgs, shared_data) -> Template:
  """pydicom's real 12-lead ECG (a 10 s RHYTHM and a MEDIAN BEAT group, 1000 Hz),
  twice."""
  del ecgs, shared_data
  for key in ("site/2013/ecg1.dcm", "site/2014/ecg2.dcm"):
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(DICOM_ECG, root / key)
  return Template(root, {"source": "dicom"},
                  {k: (k,) for k in ("site/2013/ecg1.dcm", "site/2014/ecg2.dcm")})


def _first_minutes_of_mitdb_100(root: pathlib.Path, shared_data, minutes: int) -> None:
  """The real MIT-BIH record 100 cut to its first minutes (header and format-212
  signal file; the header's checksums are still the whole record's)."""
  frames = minutes * 60 * 360
  header = (shared_data / "mitdb" / "100.hea").read_text()
  (root / "100.hea").write_text(header.replace("100 2 360 650000",
                                               f"100 2 360 {frames}"))
  (root / "100.dat").write_bytes(
      (shared_data / "mitdb" / "100.dat").read_bytes()[:3 * frames])


def _windows(root: pathlib.Path, ecgs, shared_data) -> Template:
  """The first 2 minutes of MIT-BIH record 100 (real, format 212, 360 Hz, MLII and V5)
  and h2: 40 s of leads II and V5 at 250 Hz (format 16), cut into 10 s windows."""
  root.mkdir(parents=True)
  _first_minutes_of_mitdb_100(root, shared_data, 2)
  two = _columns(_resample(ecgs[0], 250), ["II", "V5"])
  _wrsamp(root, "h2", np.tile(two, (4, 1)), 250, ["II", "V5"])
  return Template(root, {"source": "wfdb", "leads": ("II", "V5"),
                         "lead_aliases": "MLII=II", "window_seconds": 10.0,
                         "long_seconds": 30.0},
                  {"100": ("100.hea", "100.dat"), "h2": ("h2.hea", "h2.dat")},
                  samples=5000)


def _wfdb_checksum(digital: np.ndarray) -> int:
  """A WFDB header's checksum of one signal: the 16-bit signed sum of its samples."""
  total = int(np.sum(digital.astype(np.int64))) % 65536
  return total - 65536 if total >= 32768 else total


def _ecg_files(root: pathlib.Path, ecgs, shared_data) -> Template:
  """A hospital's folder for ecgdatakit: an HL7 aECG (12 leads in another order, 1000
  Hz, origin 40 uV), a GE MUSE export (8 leads, 500 Hz: the limb leads computed from I
  and II), pydicom's real DICOM ECG, an EDF+ file (12 leads, 250 Hz) and a note that is
  no ECG."""
  del shared_data
  for folder in ("muse", "dicom", "edf"):
    (root / folder).mkdir(parents=True)
  ecg_fixtures.write_hl7_aecg(root / "aecg.xml",
                              _columns(_resample(ecgs[0], 1000), AECG_ORDER), 1000,
                              AECG_ORDER, "P-17", scale_uv=2.5, origin_uv=40.0)
  ecg_fixtures.write_muse_xml(root / "muse" / "rest.xml", _columns(ecgs[1], MUSE_LEADS),
                              500, MUSE_LEADS, "12345")
  shutil.copy(DICOM_ECG, root / "dicom" / "ecg.dcm")
  ecg_fixtures.write_edf(root / "edf" / "rec.edf", _resample(ecgs[1], 250), 250,
                         records.LEADS, "P-9")
  (root / "notes.txt").write_text("seen by Dr X\n")
  keys = ("aecg.xml", "dicom/ecg.dcm", "edf/rec.edf", "muse/rest.xml")
  return Template(root, {"source": "ecg_files", "derive_limb_leads": True},
                  {k: (k,) for k in keys})


def _ecg_files_windows(root: pathlib.Path, ecgs, shared_data) -> Template:
  """ecg_files cutting 10 s windows: the first 2 minutes of MIT-BIH record 100 (its
  header's checksums recomputed for the cut: ecgdatakit verifies them) and 40 s of
  leads II and V5 as EDF+ (250 Hz, 4 s data records)."""
  root.mkdir(parents=True)
  _first_minutes_of_mitdb_100(root, shared_data, 2)
  digital = wfdb.rdrecord(str(root / "100"), physical=False).d_signal
  lines, _, signals = _header_parts(root / "100.hea")
  for i, column in zip(signals, digital.T):
    fields = _signal_fields(lines[i])
    fields[6] = str(_wfdb_checksum(column))
    lines[i] = " ".join(fields)
  _write_lines(root / "100.hea", lines)
  two = _columns(_resample(ecgs[0], 250), ["II", "V5"])
  ecg_fixtures.write_edf(root / "h2.edf", np.tile(two, (4, 1)), 250, ["II", "V5"],
                         "P-9", record_seconds=4.0)
  return Template(root, {"source": "ecg_files", "leads": ("II", "V5"),
                         "lead_aliases": "MLII=II", "window_seconds": 10.0,
                         "long_seconds": 30.0},
                  {"100.hea": ("100.hea", "100.dat"), "h2.edf": ("h2.edf",)},
                  samples=5000)


# Each builds its folder at `root` from 2 synthetic ECGs and ../shared/data.
BUILDERS: dict[str, Callable[[pathlib.Path, list, pathlib.Path], Template]] = {
    "ptbxl": _ptbxl, "wfdb": _wfdb, "cinc": _cinc, "mimic": _mimic,
    "code15": _code15, "samitrop": _samitrop, "dicom": _dicom, "windows": _windows,
    "ecg_files": _ecg_files, "ecg_files_windows": _ecg_files_windows}


def _config(template: Template, root: pathlib.Path) -> ml_collections.ConfigDict:
  config = {"name": template.config["source"], "sampling_rate": RATE,
            "min_seconds": MIN_SECONDS, **template.config, "raw_dir": str(root)}
  return ml_collections.ConfigDict(config)


@pytest.fixture(name="templates", scope="module")
def _templates(tmp_path_factory, shared_data):
  """The template of a reader by name, built (and read once) on first use."""
  ecgs = _ecgs(tmp_path_factory.mktemp("ecgs"))
  built = {}

  def get(name: str) -> Template:
    if name not in built:
      template = BUILDERS[name](tmp_path_factory.mktemp(name) / name, ecgs,
                                shared_data)
      source = registry.build_source(_config(template, template.root))
      template.pristine = {key: source.read(key).ecg for key in source.keys()}
      assert template.pristine and all(
          _base_key(k) in template.files for k in template.pristine), name
      built[name] = template
    return built[name]

  return get


# Damages. Each edit gets the damaged copy of the target file and a seeded rng; it
# rewrites the file and returns what it did.


@dataclasses.dataclass(frozen=True)
class Damage:
  """What an edit did.

  Attributes:
    description: for failure messages (offsets, values, leads).
    refuse: a correct reader must refuse the records of the damaged file.
    names: other files (relative) an error may name (e.g. a record a CSV now names).
  """

  description: str
  refuse: bool = False
  names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Case:
  reader: str
  target: str  # The file damaged, relative to the folder.
  label: str
  seed: int
  edit: Callable[[pathlib.Path, random.Random], Damage]

  @property
  def id(self) -> str:
    return f"{self.reader}:{self.target}:{self.label}:seed{self.seed}"


def truncate(signal_file: bool):
  """Cut at a random point; a signal file cut short must be refused."""
  def edit(path, rng):
    data = path.read_bytes()
    cut = rng.randrange(1, len(data))
    path.write_bytes(data[:cut])
    return Damage(f"truncated to {cut} of {len(data)} bytes", refuse=signal_file)
  return edit


def truncate_to_zero(path, rng):
  del rng
  size = path.stat().st_size
  path.write_bytes(b"")
  return Damage(f"truncated to 0 of {size} bytes", refuse=True)


def flip(head: int | None = None):
  """1-4 bytes at random offsets (within the first `head` bytes: a format's metadata)
  xor-ed with a random non-zero mask."""
  def edit(path, rng):
    data = bytearray(path.read_bytes())
    done = []
    for _ in range(rng.randint(1, 4)):
      offset = rng.randrange(min(head or len(data), len(data)))
      mask = rng.randrange(1, 256)
      data[offset] ^= mask
      done.append(f"{offset}^{mask:#04x}")
    path.write_bytes(bytes(data))
    return Damage(f"bytes flipped at {', '.join(done)} of {len(data)}")
  return edit


def _byte_cases(reader: str, targets: dict[str, bool], truncations: int = 2,
                flips: int = 3, head: int | None = None, head_flips: int = 0
                ) -> list[Case]:
  """Truncations (one of them to 0 bytes) and byte flips of each target (also in its
  first `head` bytes); `targets` maps each to whether it is a signal file (every byte
  read)."""
  cases = []
  for target, signal_file in targets.items():
    cases.append(Case(reader, target, "truncate0", 0, truncate_to_zero))
    cases += [Case(reader, target, "truncate", seed, truncate(signal_file))
              for seed in range(1, truncations + 1)]
    cases += [Case(reader, target, "flip", seed, flip()) for seed in range(flips)]
    cases += [Case(reader, target, f"flip-first{head}", seed, flip(head))
              for seed in range(head_flips)]
  return cases


# WFDB header fields.

_GAIN_FIELD = re.compile(r"(?P<gain>[^(/]*)(?P<baseline>\([^)]*\))?(?P<units>/.*)?")


def _header_parts(path: pathlib.Path):
  """(lines, index of the record line, indices of the signal lines)."""
  lines = path.read_text(encoding="latin-1").splitlines()
  data = [i for i, line in enumerate(lines)
          if line.strip() and not line.strip().startswith("#")]
  return lines, data[0], data[1:]


def _write_lines(path: pathlib.Path, lines) -> None:
  path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def _signal_fields(line: str) -> list[str]:
  return line.split(maxsplit=8)


def gain_edit(value: Callable[[float], str], every: bool, refuse: bool):
  """Sets the gain (`value` of the old gain) of one random signal, or of all."""
  def edit(path, rng):
    lines, _, signals = _header_parts(path)
    chosen = signals if every else [rng.choice(signals)]
    for i in chosen:
      fields = _signal_fields(lines[i])
      match = _GAIN_FIELD.fullmatch(fields[2])
      new = value(float(match["gain"]))
      fields[2] = new + (match["baseline"] or "") + (match["units"] or "")
      lines[i] = " ".join(fields)
    _write_lines(path, lines)
    where = "every signal" if every else f"signal line {chosen[0]}"
    return Damage(f"gain {new} on {where}", refuse=refuse)
  return edit


def units_edit(unit: str, every: bool, refuse: bool):
  def edit(path, rng):
    lines, _, signals = _header_parts(path)
    chosen = signals if every else [rng.choice(signals)]
    for i in chosen:
      fields = _signal_fields(lines[i])
      match = _GAIN_FIELD.fullmatch(fields[2])
      fields[2] = match["gain"] + (match["baseline"] or "") + "/" + unit
      lines[i] = " ".join(fields)
    _write_lines(path, lines)
    where = "every signal" if every else f"signal line {chosen[0]}"
    return Damage(f"units {unit} on {where}", refuse=refuse)
  return edit


def record_field_edit(field: int, value: Callable[[str], str | None], refuse: bool):
  """Sets field `field` of the record line to `value(old)` (None: cuts the line
  there)."""
  def edit(path, rng):
    del rng
    lines, first, _ = _header_parts(path)
    fields = lines[first].split()
    old = fields[field]
    new = value(old)
    fields = fields[:field] if new is None else (
        fields[:field] + [new] + fields[field + 1:])
    lines[first] = " ".join(fields)
    _write_lines(path, lines)
    return Damage(f"record line field {field} {old!r} -> {new!r}: {lines[first]!r}",
                  refuse=refuse)
  return edit


def format_edit(value: Callable[[str], str], refuse: bool):
  """Sets the format field (`value` of the old one) of every signal line."""
  def edit(path, rng):
    del rng
    lines, _, signals = _header_parts(path)
    for i in signals:
      fields = _signal_fields(lines[i])
      old, fields[1] = fields[1], value(fields[1])
      lines[i] = " ".join(fields)
    _write_lines(path, lines)
    return Damage(f"format {old!r} -> {fields[1]!r} on every signal", refuse=refuse)
  return edit


def comment_edit(field: str, value: str):
  """Sets (or adds) the `# field: value` comment."""
  def edit(path, rng):
    del rng
    lines = [line for line in path.read_text(encoding="latin-1").splitlines()
             if not line.lstrip("# ").lower().startswith(field.lower() + ":")]
    _write_lines(path, lines + [f"# {field}: {value}"])
    return Damage(f"comment {field}: {value!r}")
  return edit


def lead_edit(kind: str):
  """A lead renamed to an unknown name, renamed to another lead's name, or dropped
  (its signal line removed, the count of signals lowered)."""
  def edit(path, rng):
    lines, first, signals = _header_parts(path)
    i, j = rng.sample(signals, 2)
    fields = _signal_fields(lines[i])
    old = fields[8] if len(fields) > 8 else ""
    if kind == "drop":
      record = lines[first].split()
      record[1] = str(int(record[1]) - 1)
      lines[first] = " ".join(record)
      del lines[i]
      what = f"signal {old} dropped"
    else:
      new = "XYZ" if kind == "unknown" else _signal_fields(lines[j])[8]
      lines[i] = " ".join(fields[:8] + [new])
      what = f"lead {old} renamed {new}"
    _write_lines(path, lines)
    return Damage(what, refuse=True)
  return edit


def drop_signal_line(path, rng):
  """A signal line removed, the record line still counting it."""
  lines, _, signals = _header_parts(path)
  i = rng.choice(signals)
  removed = lines.pop(i)
  _write_lines(path, lines)
  return Damage(f"signal line {removed!r} removed", refuse=True)


def _number(text: str) -> float:
  return float(text.split("/")[0])


def _swap_16_212(fmt: str) -> str:
  """Format 16 -> 212 and 212 -> 16, keeping a byte offset (`16+24`)."""
  base, offset = fmt.split("+")[0], fmt[len(fmt.split("+")[0]):]
  return ("212" if base == "16" else "16") + offset


def _header_cases(reader: str, target: str, published: bool) -> list[Case]:
  """Edits of a WFDB header's fields; `published`: the reader refuses any other rate
  or length than the dataset's."""
  half = lambda old: f"{_number(old) / 2:g}"
  edits = {
      "gain=1-all": gain_edit(lambda g: "1", True, True),
      "gain=1-one": gain_edit(lambda g: "1", False, False),
      "gain=0": gain_edit(lambda g: "0", False, True),
      "gain=abc": gain_edit(lambda g: "abc", False, True),
      "gain=negative": gain_edit(lambda g: f"{-g:g}", False, True),
      "gain=nan": gain_edit(lambda g: "nan", False, True),
      "gain=1e-30": gain_edit(lambda g: "1e-30", False, True),
      "units=V-all": units_edit("V", True, True),
      "units=V-one": units_edit("V", False, True),
      "units=uV-all": units_edit("uV", True, False),
      "units=nonsense": units_edit("furlong", False, True),
      "rate=half": record_field_edit(2, half, published),
      "rate=abc": record_field_edit(2, lambda old: "abc", True),
      "rate=0": record_field_edit(2, lambda old: "0", True),
      "rate=-rate": record_field_edit(2, lambda old: f"-{old}", True),
      "rate=tiny": record_field_edit(2, lambda old: "0.001", True),
      "rate=huge": record_field_edit(2, lambda old: "1e9", True),
      "count=missing": record_field_edit(3, lambda old: None, False),
      "count=larger": record_field_edit(3, lambda old: str(int(old) * 2 + 1),
                                        True),
      "count=smaller": record_field_edit(3, lambda old: str(int(old) * 3 // 4),
                                         published),
      "count=tiny": record_field_edit(3, lambda old: "10", True),
      "count=abc": record_field_edit(3, lambda old: "abc", True),
      "nsig=abc": record_field_edit(1, lambda old: "twelve", True),
      "lead=unknown": lead_edit("unknown"),
      "lead=duplicate": lead_edit("duplicate"),
      "lead=missing": lead_edit("drop"),
      "signal-line-removed": drop_signal_line,
      "format=17": format_edit(lambda old: "17", True),
      "format=16<->212": format_edit(_swap_16_212, False),
      "format=8": format_edit(lambda old: "8" + old[len(old.split("+")[0]):], False),
      "byte-offset=huge": format_edit(lambda old: old.split("+")[0] + "+1000000",
                                      True),
      "age=text": comment_edit("Age", "old"),
      "sex=number": comment_edit("Sex", "7"),
      "dx=nonsense": comment_edit("Dx", "12x, ;;, 999999999999999999999"),
      "patient=text": comment_edit("Patient", "p" * 300),
  }
  return [Case(reader, target, label, 0, edit) for label, edit in edits.items()]


# CSV cells.


def csv_cell(column: str, value: str | Callable[[str], str], names=()):
  """Sets `column` of a random row to `value` (or `value(old)`)."""
  def edit(path, rng):
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    row = rng.randrange(len(table))
    old = table.at[row, column]
    new = value(old) if callable(value) else value
    table.at[row, column] = new
    table.to_csv(path, index=False)
    return Damage(f"row {row} {column} {old!r} -> {new!r}", names=tuple(names))
  return edit


def csv_duplicate(column: str):
  """A random row's `column` set to another row's."""
  def edit(path, rng):
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    i, j = rng.sample(range(len(table)), 2)
    table.at[i, column] = table.at[j, column]
    table.to_csv(path, index=False)
    return Damage(f"row {i} {column} := row {j}'s {table.at[j, column]!r}")
  return edit


def csv_drop_row(path, rng):
  table = pd.read_csv(path, dtype=str, keep_default_na=False)
  row = rng.randrange(len(table))
  table.drop(index=row).to_csv(path, index=False)
  return Damage(f"row {row} removed")


def csv_extra_field(first: bool):
  """The first (or last) data row with one field more than the header."""
  def edit(path, rng):
    del rng
    lines = path.read_text().splitlines()
    row = 1 if first else len(lines) - 1
    lines[row] += ",surplus"
    path.write_text("\n".join(lines) + "\n")
    return Damage(f"line {row} has one field too many")
  return edit


def csv_header_renamed(path, rng):
  lines = path.read_text().splitlines()
  columns = lines[0].split(",")
  i = rng.randrange(len(columns))
  old, columns[i] = columns[i], columns[i].upper() + "_X"
  lines[0] = ",".join(columns)
  path.write_text("\n".join(lines) + "\n")
  return Damage(f"column {old!r} renamed {columns[i]!r}")


def _csv_cases(reader: str, target: str, edits: dict) -> list[Case]:
  common = {"drop-row": csv_drop_row, "extra-field-first": csv_extra_field(True),
            "extra-field-last": csv_extra_field(False),
            "column-renamed": csv_header_renamed}
  return [Case(reader, target, label, 0, edit)
          for label, edit in {**edits, **common}.items()]


MISSING_PTBXL = "records500/00000/09999_hr"
MISSING_MIMIC = "files/p1009/p10090000/s49999999/49999999"


def _ptbxl_csv_cases() -> list[Case]:
  edits = {
      "ecg_id=text": csv_cell("ecg_id", "x8"),
      "ecg_id=blank": csv_cell("ecg_id", ""),
      "ecg_id=duplicate": csv_duplicate("ecg_id"),
      "ecg_id=fraction": csv_cell("ecg_id", "1.5"),
      "ecg_id=huge": csv_cell("ecg_id", "99999999999999999999"),
      "patient_id=text": csv_cell("patient_id", "p123"),
      "patient_id=blank": csv_cell("patient_id", ""),
      "patient_id=huge": csv_cell("patient_id", "1e30"),
      "strat_fold=text": csv_cell("strat_fold", "ten"),
      "strat_fold=blank": csv_cell("strat_fold", ""),
      "age=text": csv_cell("age", "old"),
      "sex=text": csv_cell("sex", "unknown"),
      "scp_codes=blank": csv_cell("scp_codes", ""),
      "scp_codes=bad-value": csv_cell("scp_codes", "{'NORM': 'high'}"),
      "scp_codes=unknown-code": csv_cell("scp_codes", "{'NOTACODE': 100.0}"),
      "scp_codes=not-a-dict": csv_cell("scp_codes", "NORM"),
      "filename_hr=blank": csv_cell("filename_hr", ""),
      "filename_hr=missing": csv_cell("filename_hr", MISSING_PTBXL,
                                      names=[MISSING_PTBXL]),
  }
  return _csv_cases("ptbxl", "ptbxl_database.csv", edits)


def _code15_csv_cases() -> list[Case]:
  edits = {
      "exam_id=text": csv_cell("exam_id", "x101"),
      "exam_id=blank": csv_cell("exam_id", ""),
      "exam_id=duplicate": csv_duplicate("exam_id"),
      "exam_id=huge": csv_cell("exam_id", "99999999999999999999"),
      "patient_id=text": csv_cell("patient_id", "p17"),
      "patient_id=blank": csv_cell("patient_id", ""),
      "patient_id=fraction": csv_cell("patient_id", "3.5"),
      "age=text": csv_cell("age", "old"),
      "is_male=text": csv_cell("is_male", "maybe"),
      "RBBB=text": csv_cell("RBBB", "yes?"),
      "normal_ecg=blank": csv_cell("normal_ecg", ""),
      "AF=number": csv_cell("AF", "2"),
  }
  return _csv_cases("code15", "exams.csv", edits)


def _samitrop_csv_cases() -> list[Case]:
  edits = {
      "exam_id=text": csv_cell("exam_id", "abc"),
      "exam_id=blank": csv_cell("exam_id", ""),
      "exam_id=duplicate": csv_duplicate("exam_id"),
      "age=blank": csv_cell("age", ""),
      "normal_ecg=text": csv_cell("normal_ecg", "maybe"),
  }
  return _csv_cases("samitrop", "exams.csv", edits)


def _mimic_csv_cases() -> list[Case]:
  edits = {
      "subject_id=text": csv_cell("subject_id", "p10000032"),
      "subject_id=blank": csv_cell("subject_id", ""),
      "subject_id=huge": csv_cell("subject_id", "99999999999999999999"),
      "study_id=fraction": csv_cell("study_id", "4068923.5"),
      "study_id=negative": csv_cell("study_id", "-5"),
      "path=blank": csv_cell("path", ""),
      "path=missing": csv_cell("path", MISSING_MIMIC, names=[MISSING_MIMIC]),
      "path=with-extension": csv_cell("path", lambda old: old + ".hea"),
      "path=duplicate": csv_duplicate("path"),
  }
  return _csv_cases("mimic", "record_list.csv", edits)


# HDF5 datasets.


def hdf5_replace(dataset: str, change: Callable[[np.ndarray], np.ndarray | None],
                 refuse: bool = False):
  """Rewrites `dataset` as `change(old values)` (None: removes it)."""
  def edit(path, rng):
    del rng
    with h5py.File(path, "a") as f:
      old = f[dataset][()]
      new = change(old)
      del f[dataset]
      if new is not None:
        f.create_dataset(dataset, data=new)
    shape = None if new is None else new.shape
    return Damage(f"{dataset} {old.shape} {old.dtype} -> "
                  f"{shape} {getattr(new, 'dtype', '')}", refuse=refuse)
  return edit


def _with_nan(tracings):
  out = tracings.copy()
  out[:, 2000, 3] = np.nan
  return out


def _with_inf(tracings):
  out = tracings.copy()
  out[:, 2000, 7] = np.inf
  return out


def _hdf5_cases(reader: str, target: str, exam_ids: bool) -> list[Case]:
  edits = {
      "tracings=2048-samples": hdf5_replace("tracings", lambda t: t[:, ::2], True),
      "tracings=5000-samples": hdf5_replace(
          "tracings", lambda t: np.pad(t, ((0, 0), (0, 904), (0, 0))), True),
      "tracings=8-leads": hdf5_replace("tracings", lambda t: t[:, :, :8], True),
      "tracings=transposed": hdf5_replace("tracings", lambda t: t.transpose(0, 2, 1),
                                          True),
      "tracings=2d": hdf5_replace("tracings", lambda t: t[:, :, 0], True),
      "tracings=one-fewer": hdf5_replace("tracings", lambda t: t[:-1]),
      "tracings=missing": hdf5_replace("tracings", lambda t: None, True),
      "tracings=uV": hdf5_replace("tracings", lambda t: t * 1000, True),
      "tracings=V": hdf5_replace("tracings", lambda t: t / 1000),
      "tracings=nan": hdf5_replace("tracings", _with_nan, True),
      "tracings=inf": hdf5_replace("tracings", _with_inf, True),
      "tracings=int16": hdf5_replace("tracings", lambda t: t.astype(np.int16)),
      "tracings=float64": hdf5_replace("tracings", lambda t: t.astype(np.float64)),
  }
  if exam_ids:
    edits.update({
        "exam_id=missing": hdf5_replace("exam_id", lambda e: None),
        "exam_id=one-more": hdf5_replace("exam_id", lambda e: np.append(e, 7), True),
        "exam_id=float": hdf5_replace("exam_id", lambda e: e + 0.5, True),
        "exam_id=negative": hdf5_replace("exam_id", lambda e: -e),
        "exam_id=2d": hdf5_replace("exam_id", lambda e: e[:, None], True),
    })
  return [Case(reader, target, label, 0, edit) for label, edit in edits.items()]


# DICOM elements.


def _rhythm_channels(ds):
  return ds.WaveformSequence[0].ChannelDefinitionSequence


def dicom_edit(change: Callable[[pydicom.Dataset, random.Random], str],
               refuse: bool = False):
  """Loads the file, `change(ds, rng)` -> description, saves it."""
  def edit(path, rng):
    ds = pydicom.dcmread(path)
    what = change(ds, rng)
    ds.save_as(path)
    return Damage(what, refuse=refuse)
  return edit


def dicom_raw(old: bytes, new: bytes, refuse: bool = False):
  """Replaces one random occurrence of `old` by `new` (same length) among the RHYTHM
  group's elements (the 4 kB around its label, before its samples), in the file's
  bytes: for values pydicom would not write (a non-numeric DS)."""
  assert len(old) == len(new)
  def edit(path, rng):
    data = path.read_bytes()
    label = data.index(b"RHYTHM")
    offsets = [m.start() for m in re.finditer(re.escape(old), data)
               if label - 64 <= m.start() < label + 4096]
    offset = rng.choice(offsets)
    path.write_bytes(data[:offset] + new + data[offset + len(old):])
    return Damage(f"{old!r} -> {new!r} at byte {offset}", refuse=refuse)
  return edit


def _sensitivity(value: str, every: bool):
  def change(ds, rng):
    channels = _rhythm_channels(ds)
    chosen = range(len(channels)) if every else [rng.randrange(len(channels))]
    for c in chosen:
      channels[c].ChannelSensitivity = value
    return f"rhythm ChannelSensitivity {value} on channel(s) {list(chosen)}"
  return change


def _units(value: str | None, every: bool):
  def change(ds, rng):
    channels = _rhythm_channels(ds)
    chosen = range(len(channels)) if every else [rng.randrange(len(channels))]
    for c in chosen:
      if value is None:
        del channels[c].ChannelSensitivityUnitsSequence
      else:
        channels[c].ChannelSensitivityUnitsSequence[0].CodeValue = value
    return f"rhythm units {value} on channel(s) {list(chosen)}"
  return change


def _group_field(keyword: str, value):
  def change(ds, rng):
    del rng
    group = ds.WaveformSequence[0]
    old = group.get(keyword)
    if value is None:
      delattr(group, keyword)
    else:
      setattr(group, keyword, value(old) if callable(value) else value)
    new = group.get(keyword)
    show = lambda v: f"{len(v)} bytes" if isinstance(v, bytes) else v
    return f"rhythm {keyword} {show(old)} -> {show(new)}"
  return change


def _channel_field(keyword: str, value: str):
  """Sets `keyword` of every rhythm channel."""
  def change(ds, rng):
    del rng
    for channel in _rhythm_channels(ds):
      setattr(channel, keyword, value)
    return f"rhythm {keyword} {value} on every channel"
  return change


def _lead_meaning(kind: str, derived=()):
  """A rhythm channel named as no lead, or as another channel; `derived`: leads the
  reader computes when missing (never the one named as no lead)."""
  def change(ds, rng):
    channels = _rhythm_channels(ds)
    i, j = rng.sample(range(len(channels)), 2)
    if kind == "unknown" and derived:
      i = rng.choice([c for c, channel in enumerate(channels) if channel
                      .ChannelSourceSequence[0].CodeMeaning.split()[1] not in derived])
    source = channels[i].ChannelSourceSequence[0]
    other = channels[j].ChannelSourceSequence[0]
    if kind == "unknown":
      source.CodeMeaning, source.CodeValue = "Lead X", "5.6.3-9-99"
    else:
      source.CodeMeaning, source.CodeValue = other.CodeMeaning, other.CodeValue
    return f"rhythm channel {i} named {source.CodeMeaning}"
  return change


def _no_waveforms(ds, rng):
  del rng
  del ds.WaveformSequence
  return "WaveformSequence removed"


def _rhythm_labelled_beat(ds, rng):
  del rng
  ds.WaveformSequence[0].MultiplexGroupLabel = "MEDIAN BEAT"
  return "RHYTHM relabelled MEDIAN BEAT"


def _patient_field(keyword: str, value):
  def change(ds, rng):
    del rng
    old = ds.get(keyword)
    if value is None:
      delattr(ds, keyword)
    else:
      setattr(ds, keyword, value)
    return f"{keyword} {old!r} -> {ds.get(keyword)!r}"
  return change


def _dicom_edits(derived=()
                 ) -> dict[str, Callable[[pathlib.Path, random.Random], Damage]]:
  """The edits of pydicom's real ECG file (the dicom and ecg_files readers');
  `derived`: the leads the reader computes when missing."""
  return {
      "sensitivity=0-all": dicom_edit(_sensitivity("0", True), True),
      "sensitivity=0-one": dicom_edit(_sensitivity("0", False), True),
      "sensitivity=negative": dicom_edit(_sensitivity("-1.25", False)),
      "sensitivity=x1000": dicom_edit(_sensitivity("1250", True), True),
      "sensitivity=text": dicom_raw(b"1.25", b"abcd", True),
      "correction=0": dicom_edit(_channel_field(
          "ChannelSensitivityCorrectionFactor", "0"), True),
      "baseline=100mV": dicom_edit(_channel_field("ChannelBaseline", "100000"), True),
      "units=V": dicom_edit(_units("V", True), True),
      "units=mV": dicom_edit(_units("mV", True), True),
      "units=nonsense": dicom_edit(_units("furlong", False), True),
      "units=missing": dicom_edit(_units(None, True)),
      "units=raw-text": dicom_raw(b"uV", b"zz", True),
      "rate=500": dicom_edit(_group_field("SamplingFrequency", "500")),
      "rate=0": dicom_edit(_group_field("SamplingFrequency", "0"), True),
      "rate=negative": dicom_edit(_group_field("SamplingFrequency", "-1000"), True),
      "rate=missing": dicom_edit(_group_field("SamplingFrequency", None), True),
      "rate=text": dicom_raw(b"1000", b"abcd", True),
      "samples=larger": dicom_edit(_group_field("NumberOfWaveformSamples",
                                                lambda n: n * 2), True),
      "samples=smaller": dicom_edit(_group_field("NumberOfWaveformSamples",
                                                 lambda n: n // 2), True),
      "channels=fewer": dicom_edit(_group_field("NumberOfWaveformChannels", 11), True),
      "bits=8": dicom_edit(_group_field("WaveformBitsAllocated", 8)),
      "bits=32": dicom_edit(_group_field("WaveformBitsAllocated", 32)),
      "interpretation=UB": dicom_edit(_group_field("WaveformSampleInterpretation",
                                                   "UB")),
      "waveform-data=short": dicom_edit(_group_field(
          "WaveformData", lambda data: data[:len(data) // 3]), True),
      "lead=unknown": dicom_edit(_lead_meaning("unknown", derived), True),
      "lead=duplicate": dicom_edit(_lead_meaning("duplicate"), True),
      "waveforms=none": dicom_edit(_no_waveforms, True),
      "rhythm=labelled-beat": dicom_edit(_rhythm_labelled_beat, True),
      "age=text": dicom_edit(_patient_field("PatientAge", "old")),
      "sex=text": dicom_edit(_patient_field("PatientSex", "Q")),
      "patient_id=huge": dicom_edit(_patient_field("PatientID", "9" * 30)),
      "uid=missing": dicom_edit(_patient_field("SOPInstanceUID", None)),
  }


def _dicom_cases(reader: str, target: str, derived=()) -> list[Case]:
  cases = [Case(reader, target, label, 0, edit)
           for label, edit in _dicom_edits(derived).items()]
  # The first 19 kB hold the file meta, patient module and the RHYTHM group's
  # elements; its samples follow.
  return cases + _byte_cases(reader, {target: False}, truncations=3, flips=3,
                             head=19_000, head_flips=4)


# XML elements (GE MUSE, HL7 aECG). The fixtures are ASCII: edited as latin-1 text.

Span = tuple[str, int, int]  # (lead or part, start, end) in the file's text.
_MUSE_LEAD = re.compile(r"<LeadData>.*?</LeadData>", re.S)
_AECG_LEAD = re.compile(r'<component>\s*<sequence>\s*<code code="MDC_ECG_LEAD_(\w+)"'
                        r".*?</sequence>\s*</component>", re.S)


def xml_edit(change: Callable[[str, random.Random], tuple[str, str]],
             refuse: bool = False):
  """Reads the file's text, `change(text, rng)` -> (text, description), writes it."""
  def edit(path, rng):
    text, what = change(path.read_bytes().decode("latin-1"), rng)
    path.write_bytes(text.encode("latin-1"))
    return Damage(what, refuse=refuse)
  return edit


def truncate_xml(path, rng):
  """Cut before the root element's end tag: never well-formed."""
  data = path.read_bytes()
  cut = rng.randrange(1, data.rindex(b"</"))
  path.write_bytes(data[:cut])
  return Damage(f"truncated to {cut} of {len(data)} bytes", refuse=True)


def _muse_rhythm(text: str) -> list[Span]:
  start = text.index("<WaveformType>Rhythm")
  return [("Rhythm", start, text.index("</Waveform>", start))]


def _muse_leads(text: str) -> list[Span]:
  """The Rhythm waveform's LeadData elements."""
  (_, start, end), = _muse_rhythm(text)
  return [(re.search(r"<LeadID>(.*?)</LeadID>", m[0])[1], m.start(), m.end())
          for m in _MUSE_LEAD.finditer(text, start, end)]


def _aecg_leads(text: str) -> list[Span]:
  """The rhythm's lead sequences, each with its <component>."""
  return [(m[1], m.start(), m.end()) for m in _AECG_LEAD.finditer(text)]


def _aecg_time(text: str) -> list[Span]:
  start = text.index('<code code="TIME_ABSOLUTE"')
  return [("time", start, text.index("</sequence>", start))]


def _whole(text: str) -> list[Span]:
  return [("file", 0, len(text))]


def _pick(spans: list[Span], rng, every: bool, among=None) -> list[Span]:
  """All spans, or one at random (among those named in `among`, in any case)."""
  if every:
    return spans
  names = None if among is None else {name.lower() for name in among}
  return [rng.choice([s for s in spans if names is None or s[0].lower() in names])]


def _splice(text: str, chosen: list[Span], block_edit) -> tuple[str, list[str]]:
  """`text` with each chosen span replaced by `block_edit(name, block)` -> (block,
  description)."""
  done = []
  for name, start, end in sorted(chosen, key=lambda s: -s[1]):  # Last first.
    block, what = block_edit(name, text[start:end])
    text = text[:start] + block + text[end:]
    done.append(what)
  return text, done[::-1]


def _tag(tag: str, value, spans: Callable[[str], list[Span]], every: bool = False,
         among=None):
  """Sets the text of the first <tag> in one random span (or every span) to `value`
  (a string, a function of the old text; None: the element removed)."""
  pattern = re.compile(rf"<{tag}>(.*?)</{tag}>", re.S)

  def change(text, rng):
    def block_edit(name, block):
      match = pattern.search(block)
      new = value(match[1]) if callable(value) else value
      element = "" if new is None else f"<{tag}>{new}</{tag}>"
      show = lambda v: v if v is None or len(v) < 40 else f"{len(v)} characters"
      return (block[:match.start()] + element + block[match.end():],
              f"{name}: <{tag}> {show(match[1])!r} -> {show(new)!r}")
    text, done = _splice(text, _pick(spans(text), rng, every, among), block_edit)
    return text, "; ".join(done) if not every else f"{done[0]} (every one)"
  return change


def _attribute(element: str, attribute: str | None, value,
               spans: Callable[[str], list[Span]], every: bool = False, among=None):
  """Sets `attribute` of the first <element> in one random span (or every span) to
  `value` (a string or a function of the old one; None: the attribute removed, or
  with no attribute the element)."""
  pattern = re.compile(rf"<{element}\b[^>]*>")

  def change(text, rng):
    def block_edit(name, block):
      match = pattern.search(block)
      tag = match[0]
      if attribute is None:
        new_tag, what = "", f"<{element}> removed"
      else:
        old = re.search(rf'\s{attribute}="([^"]*)"', tag)
        new = value(old[1]) if callable(value) else value
        new_tag = (tag.replace(old[0], "") if new is None
                   else tag[:old.start(1)] + new + tag[old.end(1):])
        what = f"<{element} {attribute}> {old[1]!r} -> {new!r}"
      return block[:match.start()] + new_tag + block[match.end():], f"{name}: {what}"
    text, done = _splice(text, _pick(spans(text), rng, every, among), block_edit)
    return text, "; ".join(done) if not every else f"{done[0]} (every one)"
  return change


def _remove(spans: Callable[[str], list[Span]], among=None):
  """A random span (among those named in `among`) removed: a lead's LeadData or
  sequence."""
  def change(text, rng):
    text, done = _splice(text, _pick(spans(text), rng, False, among),
                         lambda name, block: ("", f"lead {name} removed"))
    return text, done[0]
  return change


def _chain(*changes):
  """The changes one after the other."""
  def change(text, rng):
    done = []
    for one in changes:
      text, what = one(text, rng)
      done.append(what)
    return text, "; ".join(done)
  return change


def _muse_short_lead(text, rng):
  """One lead's samples cut to half, its byte and sample counts and CRC32 to match."""
  def block_edit(name, block):
    data = base64.b64decode("".join(
        re.search(r"<WaveFormData>(.*?)</WaveFormData>", block, re.S)[1].split()))
    short = data[:len(data) // 2]
    for tag, new in (("LeadByteCountTotal", len(short)),
                     ("LeadSampleCountTotal", len(short) // 2),
                     ("LeadDataCRC32", zlib.crc32(short) & 0xFFFFFFFF),
                     ("WaveFormData", base64.b64encode(short).decode("ascii"))):
      block = re.sub(rf"<{tag}>.*?</{tag}>", f"<{tag}>{new}</{tag}>", block,
                     flags=re.S)
    return block, (f"lead {name}: {len(short) // 2} of {len(data) // 2} samples, "
                   "counts and CRC32 to match")
  text, done = _splice(text, _pick(_muse_leads(text), rng, False), block_edit)
  return text, done[0]


def _digits(change: Callable[[list[str], random.Random], str]):
  """An aECG lead's <digits> tokens edited by `change(tokens, rng)` -> what."""
  def edit_text(text, rng):
    def block_edit(name, block):
      match = re.search(r"<digits>(.*?)</digits>", block, re.S)
      tokens = match[1].split()
      what = change(tokens, rng)
      return (block[:match.start(1)] + " ".join(tokens) + block[match.end(1):],
              f"lead {name}: {what}")
    text, done = _splice(text, _pick(_aecg_leads(text), rng, False), block_edit)
    return text, done[0]
  return edit_text


def _token(value: str):
  def change(tokens, rng):
    i = rng.randrange(len(tokens))
    old, tokens[i] = tokens[i], value
    return f"digit {i} {old} -> {value}"
  return change


def _halve(tokens, rng):
  del rng
  n = len(tokens)
  del tokens[n // 2:]
  return f"{len(tokens)} of {n} digits"


def _muse_edits() -> dict[str, Callable[[pathlib.Path, random.Random], Damage]]:
  lead = lambda tag, value, every=False: _tag(tag, value, _muse_leads, every)
  rhythm = lambda tag, value: _tag(tag, value, _muse_rhythm)
  units, gain = "LeadAmplitudeUnits", "LeadAmplitudeUnitsPerBit"
  return {
      "units=V-all": xml_edit(lead(units, "VOLTS", True), True),
      "units=mV-one": xml_edit(lead(units, "MILLIVOLTS"), True),
      "units=nV-all": xml_edit(lead(units, "NANOVOLTS", True)),
      "units=nonsense": xml_edit(lead(units, "FURLONGS"), True),
      "units=empty": xml_edit(lead(units, ""), True),
      "units=missing": xml_edit(lead(units, None), True),
      "gain=0": xml_edit(lead(gain, "0"), True),
      "gain=negative": xml_edit(lead(gain, "-4.88"), True),
      "gain=huge": xml_edit(lead(gain, "4880"), True),
      "gain=abc": xml_edit(lead(gain, "abc"), True),
      "gain=nan": xml_edit(lead(gain, "nan"), True),
      "gain=missing": xml_edit(lead(gain, None), True),
      "rate=missing": xml_edit(rhythm("SampleBase", None), True),
      "rate=0": xml_edit(rhythm("SampleBase", "0"), True),
      "rate=negative": xml_edit(rhythm("SampleBase", "-500"), True),
      "rate=abc": xml_edit(rhythm("SampleBase", "abc"), True),
      "rate=half": xml_edit(rhythm("SampleBase", "250")),
      "rate=x10": xml_edit(rhythm("SampleExponent", "1"), True),  # 1 s at 5 kHz.
      "lead=missing": xml_edit(_remove(_muse_leads), True),
      "lead=unknown": xml_edit(lead("LeadID", "XYZ"), True),
      "lead=duplicate": xml_edit(lead("LeadID", "V2"), True),  # V2 twice, or no V2.
      "base64=cut": xml_edit(lead("WaveFormData", lambda old: old[:len(old) // 2]),
                             True),
      "base64=cut-consistent": xml_edit(_muse_short_lead, True),
      "base64=invalid": xml_edit(lead("WaveFormData", lambda old: "!" + old[1:]),
                                 True),
      "crc=wrong": xml_edit(lead("LeadDataCRC32", lambda old: str(int(old) ^ 1)),
                            True),
      "crc=missing": xml_edit(lead("LeadDataCRC32", None, True)),
      "byte-count=wrong": xml_edit(lead("LeadByteCountTotal",
                                        lambda old: str(int(old) + 2)), True),
      "sample-count=wrong": xml_edit(lead("LeadSampleCountTotal",
                                          lambda old: str(int(old) - 1)), True),
      "sample-size=1": xml_edit(lead("LeadSampleSize", "1"), True),
      "sample-size=4-all": xml_edit(lead("LeadSampleSize", "4", True), True),
      "rhythm=median": xml_edit(rhythm("WaveformType", "Median"), True),
      # The Median waveform, untyped, taken for the rhythm: 0.6 s.
      "median-type=missing": xml_edit(_tag("WaveformType", None, _whole), True),
      "first-sample-baseline": xml_edit(lead("FirstSampleBaseline", "100")),
      "age=text": xml_edit(_tag("PatientAge", "old", _whole)),
      "sex=text": xml_edit(_tag("Gender", "Q", _whole)),
      "patient_id=huge": xml_edit(_tag("PatientID", "9" * 30, _whole)),
      "patient_id=missing": xml_edit(_tag("PatientID", None, _whole)),
  }


def _aecg_edits() -> dict[str, Callable[[pathlib.Path, random.Random], Damage]]:
  scale = lambda attribute, value, every=False: _attribute("scale", attribute, value,
                                                           _aecg_leads, every)
  increment = lambda attribute, value: _attribute("increment", attribute, value,
                                                  _aecg_time)
  fixed = [lead for lead in records.LEADS if lead not in LIMB_LEADS]
  code = lambda new: lambda old: "MDC_ECG_LEAD_" + new
  return {
      "units=V-all": xml_edit(scale("unit", "V", True), True),
      "units=mV-one": xml_edit(scale("unit", "mV"), True),
      "units=nV-all": xml_edit(scale("unit", "nV", True)),
      "units=nonsense": xml_edit(scale("unit", "furlong"), True),
      "units=missing": xml_edit(scale("unit", None), True),
      "gain=0": xml_edit(scale("value", "0"), True),
      "gain=negative": xml_edit(scale("value", "-2.5"), True),
      "gain=huge": xml_edit(scale("value", "2500"), True),
      "gain=abc": xml_edit(scale("value", "abc"), True),
      "gain=nan": xml_edit(scale("value", "NaN"), True),
      "gain=missing": xml_edit(scale("value", None), True),
      "origin=huge": xml_edit(_attribute("origin", "value", "1e9", _aecg_leads), True),
      "origin-unit=nonsense": xml_edit(_attribute("origin", "unit", "furlong",
                                                  _aecg_leads), True),
      "rate=missing": xml_edit(increment(None, None), True),
      "rate=0": xml_edit(increment("value", "0"), True),
      "rate=negative": xml_edit(increment("value", "-0.001"), True),
      "rate=abc": xml_edit(increment("value", "abc"), True),
      "rate=half": xml_edit(increment("value", "0.002")),
      "rate=unit-missing": xml_edit(increment("unit", None), True),
      "rate=unit-ms": xml_edit(_chain(increment("value", "1"),
                                      increment("unit", "ms"))),  # Still 1000 Hz.
      "rate=unit-ms-x1000": xml_edit(increment("unit", "ms"), True),  # 10 ms.
      "rate=unit-nonsense": xml_edit(increment("unit", "furlong"), True),
      "lead=missing": xml_edit(_remove(_aecg_leads, fixed), True),
      "lead=missing-limb": xml_edit(_remove(_aecg_leads, LIMB_LEADS)),  # Derived.
      "lead=unknown": xml_edit(_attribute("code", "code", code("XYZ"), _aecg_leads,
                                          among=fixed), True),
      "lead=duplicate": xml_edit(_attribute("code", "code", code("V2"), _aecg_leads,
                                            among=fixed), True),
      "digits=short-one": xml_edit(_digits(_halve), True),
      "digits=text": xml_edit(_digits(_token("1x")), True),
      "digits=huge": xml_edit(_digits(_token("99999999")), True),
      "digits=nan": xml_edit(_digits(_token("nan")), True),
      "digits=empty": xml_edit(_tag("digits", "", _aecg_leads), True),
      "series=beat": xml_edit(_attribute("code", "code", "REPRESENTATIVE_BEAT",
                                         lambda text: [("series", text.index(
                                             "<series>"), len(text))]), True),
      "sex=text": xml_edit(_attribute("administrativeGenderCode", "code", "Q",
                                      _whole)),
      "birth=text": xml_edit(_attribute("birthTime", "value", "long ago", _whole)),
      "patient_id=huge": xml_edit(_attribute("id", "extension", "9" * 30,
                                             lambda text: [("subject", text.index(
                                                 "<trialSubject>"), len(text))])),
  }


# EDF header fields.

EDF_HEADER = {"patient": (8, 80), "recording": (88, 80), "header_bytes": (184, 8),
              "reserved": (192, 44), "records": (236, 8), "duration": (244, 8),
              "signals": (252, 4)}
EDF_SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("dimension", 8),
                     ("physical_min", 8), ("physical_max", 8), ("digital_min", 8),
                     ("digital_max", 8), ("prefiltering", 80), ("samples", 8),
                     ("reserved", 32))


def _edf_slots(data: bytes, field: str) -> list[tuple[str, int, int]]:
  """(lead, offset, width) of `field` of each ECG signal (not the annotations), or of
  the header's `field`."""
  if field in EDF_HEADER:
    return [("header", *EDF_HEADER[field])]
  ns = int(data[252:256])
  labels = [data[256 + 16 * i:256 + 16 * (i + 1)].decode().strip() for i in range(ns)]
  offset = 256
  for name, width in EDF_SIGNAL_FIELDS:
    if name == field:
      return [(label.removeprefix("ECG "), offset + width * i, width)
              for i, label in enumerate(labels) if label != "EDF Annotations"]
    offset += width * ns
  raise KeyError(field)


def edf_edit(field: str, value: str | Callable[[str], str], every: bool = False,
             refuse: bool = False, among=None):
  """Sets EDF header `field` (of one random ECG signal among the leads `among`, or of
  every one) to `value` (or `value(old)`), blank-padded to its width."""
  def edit(path, rng):
    data = bytearray(path.read_bytes())
    slots = _edf_slots(data, field)
    chosen = slots if every else [rng.choice(
        [s for s in slots if among is None or s[0] in among])]
    for _, offset, width in chosen:
      old = data[offset:offset + width].decode().strip()
      new = value(old) if callable(value) else value
      assert len(new) <= width, new
      data[offset:offset + width] = new.ljust(width).encode()
    path.write_bytes(bytes(data))
    where = "every signal" if every else f"signal {chosen[0][0]}"
    return Damage(f"{field} {old!r} -> {new!r} on {where}", refuse=refuse)
  return edit


def _edf_edits(leads) -> dict[str, Callable[[pathlib.Path, random.Random], Damage]]:
  """Edits of an EDF+ file of `leads` (±10 mV physical, int16 digital)."""
  fixed = [lead for lead in leads if lead not in LIMB_LEADS]
  other = lambda old: next(f"ECG {lead}" for lead in leads
                           if f"ECG {lead}" != old)
  return {
      "units=V-all": edf_edit("dimension", "V", True, True),
      "units=V-one": edf_edit("dimension", "V", refuse=True),
      "units=uV-all": edf_edit("dimension", "uV", True),
      "units=nonsense": edf_edit("dimension", "furlong", refuse=True),
      "units=missing": edf_edit("dimension", "", refuse=True),
      "physical=flat": edf_edit("physical_max", "-10", refuse=True),  # Gain 0.
      "physical=huge": edf_edit("physical_max", "1e7", refuse=True),
      "physical=min-above-max": edf_edit("physical_min", "20"),  # Gain < 0.
      "physical=abc": edf_edit("physical_max", "abc", refuse=True),
      "digital=flat": edf_edit("digital_max", "-32768", refuse=True),
      "digital=abc": edf_edit("digital_min", "abc", refuse=True),
      "samples=smaller-all": edf_edit("samples", lambda old: str(int(old) * 4 // 5),
                                      True, True),
      "samples=larger-one": edf_edit("samples", lambda old: str(int(old) + 1),
                                     refuse=True),
      "samples=0": edf_edit("samples", "0", refuse=True),
      "records=larger": edf_edit("records", lambda old: str(int(old) + 3),
                                 refuse=True),
      "records=smaller": edf_edit("records", lambda old: str(int(old) // 2 + 1)),
      "records=-1": edf_edit("records", "-1"),
      "records=0": edf_edit("records", "0", refuse=True),
      "records=abc": edf_edit("records", "abc", refuse=True),
      "duration=0": edf_edit("duration", "0", refuse=True),
      "duration=half": edf_edit("duration", lambda old: f"{float(old) / 2:g}"),
      "duration=negative": edf_edit("duration", "-1", refuse=True),
      "duration=abc": edf_edit("duration", "abc", refuse=True),
      "header-bytes=wrong": edf_edit("header_bytes", "256"),
      "signals=fewer": edf_edit("signals", lambda old: str(int(old) - 1),
                                refuse=True),
      "label=unknown": edf_edit("label", "ECG XYZ", refuse=True, among=fixed),
      "label=duplicate": edf_edit("label", other, refuse=True, among=fixed),
      "label=annotations": edf_edit("label", "EDF Annotations", refuse=True,
                                    among=fixed),
      "edf+=plain": edf_edit("reserved", ""),
      "patient=text": edf_edit("patient", "p" * 80),
  }


def _ecg_files_cases() -> list[Case]:
  cases = []
  for target, edits in (("muse/rest.xml", _muse_edits()),
                        ("aecg.xml", _aecg_edits()),
                        ("edf/rec.edf", _edf_edits(records.LEADS))):
    cases += [Case("ecg_files", target, label, 0, edit)
              for label, edit in edits.items()]
  for target in ("muse/rest.xml", "aecg.xml"):
    cases.append(Case("ecg_files", target, "truncate0", 0, truncate_to_zero))
    cases += [Case("ecg_files", target, "truncate-xml", seed, truncate_xml)
              for seed in (1, 2)]
    cases += [Case("ecg_files", target, "flip", seed, flip()) for seed in range(3)]
  cases += _byte_cases("ecg_files", {"edf/rec.edf": True}, head=3328, head_flips=2)
  cases += _dicom_cases("ecg_files", "dicom/ecg.dcm", derived=LIMB_LEADS)
  windows = "ecg_files_windows"
  cases += _header_cases(windows, "100.hea", published=False)
  cases += [Case(windows, "h2.edf", label, 0, edit)
            for label, edit in _edf_edits(("II", "V5")).items()
            if label.startswith(("units=V", "samples", "records", "duration"))]
  cases += _byte_cases(windows, {"100.dat": True, "h2.edf": True})
  return cases


def _cases() -> list[Case]:
  cases = []
  cases += _header_cases("ptbxl", "records500/00000/00001_hr.hea", published=True)
  cases += _byte_cases("ptbxl", {"records500/00000/00001_hr.dat": True,
                                 "records500/00000/00002_hr.hea": False,
                                 "ptbxl_database.csv": False})
  cases += _byte_cases("ptbxl", {"scp_statements.csv": False}, truncations=1,
                       flips=2)
  cases += _ptbxl_csv_cases()
  cases += _header_cases("wfdb", "a500.hea", published=False)
  cases += _header_cases("wfdb", "sub/b250.hea", published=False)[:8]
  cases += _byte_cases("wfdb", {"a500.dat": True, "sub/b250.dat": True,
                                "a500.hea": False})
  cases += _header_cases("cinc", "g1/A0001.hea", published=False)
  cases += _byte_cases("cinc", {"g1/A0001.mat": True, "g2/E00001.mat": True,
                                "g2/E00001.hea": False}, head=256, head_flips=2)
  cases += _header_cases("mimic", f"{MIMIC_A}.hea", published=False)
  cases += _byte_cases("mimic", {f"{MIMIC_B}.dat": True, "record_list.csv": False})
  cases += _mimic_csv_cases()
  cases += _hdf5_cases("code15", "exams_part0.hdf5", exam_ids=True)
  cases += _byte_cases("code15", {"exams_part0.hdf5": False, "exams.csv": False},
                       head=4096, head_flips=4)
  cases += _code15_csv_cases()
  cases += _hdf5_cases("samitrop", "exams.hdf5", exam_ids=False)
  cases += _byte_cases("samitrop", {"exams.hdf5": False, "exams.csv": False},
                       head=4096, head_flips=2)
  cases += _samitrop_csv_cases()
  cases += _dicom_cases("dicom", "site/2013/ecg1.dcm")
  cases += _header_cases("windows", "100.hea", published=False)
  cases += _byte_cases("windows", {"100.dat": True, "h2.dat": True, "h2.hea": False})
  cases += _ecg_files_cases()
  return cases


CASES = _cases()

# Cases that show a bug of the reader (reported, not fixed here): strict xfails, so a
# fix shows as XPASS; then drop its entry.
READER_BUGS: dict[str, str] = {}


# Checking the outcomes.


def _base_key(key: str) -> str:
  return key.split("#w", 1)[0]


def _copy(template: Template, destination: pathlib.Path, target: str) -> pathlib.Path:
  """The template folder at `destination`: `target` copied, the rest hard-linked
  (never written: every edit rewrites its target only)."""
  source = template.root / target

  def copy(src, dst):
    if pathlib.Path(src) == source:
      shutil.copyfile(src, dst)
    else:
      os.link(src, dst)

  shutil.copytree(template.root, destination, copy_function=copy)
  return destination


def _names(message: str, candidates) -> bool:
  return any(name in message for name in candidates)


def _record_path(source, record: records.Record, key: str) -> str:
  """The path prepare reports for a record's stored-signal check."""
  root = getattr(source, "root", None)
  return str(pathlib.Path(root) / record.record_name) if root and record.record_name \
      else key


def _check_record(template: Template, source, key: str, record: records.Record
                  ) -> list[str]:
  """What is wrong with a record that was read (empty: nothing)."""
  problems = []
  ecg, leads = record.ecg, template.leads
  if record.sampling_rate != RATE:
    problems.append(f"sampling_rate {record.sampling_rate}, expected {RATE}")
  if not isinstance(ecg, np.ndarray) or ecg.dtype != np.float32 or ecg.ndim != 2 \
      or ecg.shape[1] != len(leads):
    problems.append(f"ecg {getattr(ecg, 'dtype', type(ecg))} "
                    f"{getattr(ecg, 'shape', '')}, expected float32 [time, "
                    f"{len(leads)}]")
    return problems
  # Windowed: only the windows have a fixed length (short records pass whole).
  fixed = "#w" in key or "window_seconds" not in template.config
  if template.samples and fixed and ecg.shape[0] != template.samples:
    problems.append(f"{ecg.shape[0]} samples, expected {template.samples}")
  try:
    records.check_signal(ecg, _record_path(source, record, key), RATE, MIN_SECONDS,
                         leads=leads)
  except records.RecordError as e:
    problems.append(f"returned a signal that fails check_signal: {e}")
  # As stored_signal checks, independently of it: finite as float16, within 30 mV.
  stored = ecg.astype(np.float16)
  if not np.isfinite(stored).all():
    problems.append("not finite as stored float16")
  elif np.abs(stored).max() > records.MAX_AMPLITUDE_MV:
    problems.append(f"peak {float(np.abs(stored).max()):.4g} mV beyond "
                    f"{records.MAX_AMPLITUDE_MV:g} mV")
  try:
    example = record.to_example()
    assert np.isfinite(example["ecg"]).all()
    assert int(record.sex) in (records.SEX_MALE, records.SEX_FEMALE,
                               records.SEX_UNKNOWN)
    assert np.asarray(record.labels).shape == (len(records.SUPERCLASSES),)
    assert 0 <= int(record.ecg_id) < 2**63 and 0 <= int(record.patient_id) < 2**63
  except Exception as e:  # pylint: disable=broad-except
    problems.append(f"record fields do not store: {type(e).__name__}: {e}")
  return problems


def _outcomes(template: Template, root: pathlib.Path, case: Case, damage: Damage
              ) -> list[str]:
  """The problems of reading the damaged folder `root` (empty: every outcome is
  allowed)."""
  damaged = str(root / case.target)
  table = case.target in template.tables
  file_names = [damaged, *(str(root / n) for n in damage.names)]

  def affected(key):
    base = _base_key(key)
    return table or base not in template.files or case.target in template.files[base]

  def record_names(key):
    """What an error about `key` may name: the damaged file, the record (its key
    under the root, its files without extension: `file.hdf5 (row 3)`)."""
    files = template.files.get(_base_key(key), ())
    return file_names + [str(root / _base_key(key))] + [
        str((root / f).with_suffix("")) for f in files]

  try:
    source = registry.build_source(_config(template, root))
    keys = source.keys()
    source = pickle.loads(pickle.dumps(source))  # As sent to prepare's workers.
  except records.SourceError as e:
    message = str(e)
    if _names(message, file_names) or (
        str(root) in message and pathlib.Path(case.target).name in message):
      return []
    return [f"SourceError does not name {damaged}: {message}"]
  except Exception as e:  # pylint: disable=broad-except
    return [f"building the reader raised {type(e).__name__}: {e}"]

  problems = []
  for key in template.pristine:
    if not affected(key) and key not in keys:
      problems.append(f"{key}: undamaged record no longer listed")
  for key in keys:
    try:
      record = source.read(key)
      records.stored_signal(record.ecg, _record_path(source, record, key),
                            records.MAX_AMPLITUDE_MV, template.leads)
    except records.RecordError as e:
      if not affected(key):
        problems.append(f"{key}: undamaged record refused: {e}")
      elif not _names(str(e), record_names(key)):
        problems.append(f"{key}: RecordError names neither {damaged} nor the "
                        f"record: {e}")
      continue
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f"{key}: raised {type(e).__name__}: {e}")
      continue
    problems += [f"{key}: {p}" for p in _check_record(template, source, key, record)]
    if affected(key) and damage.refuse:
      problems.append(f"{key}: read, though the damage is detectable")
    if not affected(key) and not np.array_equal(
        record.ecg, template.pristine.get(key, np.empty(0))):
      problems.append(f"{key}: undamaged record reads differently")
  return problems


def _param(case: Case):
  bug = READER_BUGS.get(case.id)
  marks = [pytest.mark.xfail(reason=bug, raises=AssertionError, strict=True)
           ] if bug else []
  return pytest.param(case, marks=marks, id=case.id)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_damaged_folder(case, templates, tmp_path):
  template = templates(case.reader)
  root = _copy(template, tmp_path / case.reader, case.target)
  damage = case.edit(root / case.target, random.Random(case.id))
  problems = _outcomes(template, root, case, damage)
  assert not problems, f"{case.id} ({damage.description}):\n  " + "\n  ".join(problems)


def test_cases_cover_every_reader():
  assert sorted({case.reader for case in CASES}) == sorted(BUILDERS)
  assert len({case.id for case in CASES}) == len(CASES)
  assert set(READER_BUGS) <= {case.id for case in CASES}
  # A reader added to the registry needs a template here.
  assert set(registry.READERS) == {"ptbxl", "wfdb", "cinc", "mimic_iv_ecg", "code15",
                                   "samitrop", "dicom", "ecg_files"}
