"""Reading one WFDB record into the standard lead layout, with clear errors.

Shared by every WFDB-based reader (PTB-XL, MIMIC-IV-ECG, PhysioNet/CinC sets, any WFDB
folder). The `.hea` header is parsed here, once per record, by a strict parser of the
WFDB header format (https://physionet.org/physiotools/wag/header-5.htm): wfdb's own
parser turns a field it cannot read into its default (a rate of 'abc' becomes 250 Hz,
a gain of 0 becomes 200/mV) and costs ~25 ms a header. Signal files in formats 16 and
212 (PTB-XL, MIMIC-IV-ECG, MIT-BIH, most PhysioNet sets) are read with numpy, only the
frames asked for, as are the CinC Challenge's MATLAB 4 `.mat` files (format 16 after a
matrix header, which is checked against the WFDB header); MATLAB 5 `.mat` files are
read whole with scipy; other formats, multi-frequency and skewed signals through
wfdb.rdrecord, after the same header checks.

Every problem is a `RecordError` naming the file: a header field that does not parse,
no sampling rate, a gain of 0 (uncalibrated) or a unit other than V, mV or uV on a lead
that is read, lead names that do not give the leads asked for (or give one twice), a
missing or truncated signal file. A header without a sample count takes it from the
signal file's size (never by reading the file).

`check_claimed_sizes` checks a header's sample counts against its files' sizes alone,
for a parser that allocates what a header claims before reading (ecg_files'
ecgdatakit).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import re
import stat
from typing import NamedTuple, Sequence

import numpy as np
import scipy.io
import wfdb

from crema_jax.data import records
from crema_jax.data import signal

# Bytes per sample of each WFDB storage format (None: FLAC, compressed).
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2,
                     "212": 1.5, "310": 4 / 3, "311": 4 / 3, "508": None, "516": None,
                     "524": None}
# The digital value that marks a missing sample, for the formats read here.
_INVALID_SAMPLE = {"16": -2**15, "212": -2**11}
_TO_MILLIVOLTS = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3}
_FORMAT = re.compile(r"(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?")
_GAIN = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\((-?\d+)\))?"
                   r"(?:/(\S+))?")
_INTEGER = re.compile(r"[-+]?\d+")
_INTEGERS = re.compile(r"[-+]?\d+(?: [-+]?\d+)*")
_MATLAB5 = b"MATLAB 5.0"  # The start of a MATLAB 5 file's text header.


class SignalSpec(NamedTuple):
  """One signal line of a header."""

  file_name: str
  fmt: str
  samps_per_frame: int
  skew: int
  byte_offset: int
  adc_gain: float  # Digital units per physical unit; 0 when uncalibrated.
  baseline: int
  units: str
  name: str


@dataclasses.dataclass(frozen=True)
class Header:
  """A parsed, checked WFDB header.

  Attributes:
    file: the `.hea` file.
    fs: samples per second per signal, Hz.
    sig_len: samples per signal (from the header, else from the signal file's size).
    signals: one SignalSpec per signal line, in header order.
    comments: the `#` lines, without the `#`.
  """

  file: pathlib.Path
  fs: float
  sig_len: int
  signals: tuple[SignalSpec, ...]
  comments: tuple[str, ...]

  @property
  def n_sig(self) -> int:
    return len(self.signals)

  @property
  def sig_name(self) -> list[str]:
    return [s.name for s in self.signals]

  @property
  def units(self) -> list[str]:
    return [s.units for s in self.signals]

  @property
  def duration(self) -> float:
    """Seconds."""
    return self.sig_len / self.fs

  @property
  def record(self) -> pathlib.Path:
    """The record's path without extension."""
    return self.file.with_suffix("")


@dataclasses.dataclass
class WFDBRecord:
  ecg: np.ndarray  # [time, len(leads)] float32 mV in the order asked for, column-major.
  sampling_rate: float
  comments: list[str]


def _header_error(path: pathlib.Path, detail: str) -> records.RecordError:
  return records.RecordError(str(path), f"header does not parse: {detail}")


def _integer(text: str, what: str, path: pathlib.Path, line: str) -> int:
  if not _INTEGER.fullmatch(text):
    raise _header_error(path, f"{what} {text!r} is not an integer in {line!r}")
  return int(text)


def _parse_record_line(line: str, path: pathlib.Path) -> tuple[int, float, int | None]:
  """(number of signals, rate, samples or None) of the record line."""
  fields = line.split()
  if "/" in fields[0]:
    raise records.RecordError(str(path), f"multi-segment record ({fields[0]}): not "
                              "supported")
  if len(fields) < 2:
    raise _header_error(path, f"record line {line!r} has no number of signals")
  n_sig = _integer(fields[1], "number of signals", path, line)
  if n_sig < 1:
    raise records.RecordError(str(path), "header declares no signals")
  if len(fields) < 3:
    # WFDB would assume 250 Hz; an ECG header without its rate is not trusted.
    raise records.RecordError(str(path), f"record line {line!r} gives no sampling "
                              "rate")
  rate_text = fields[2].split("/", 1)[0]  # Drops the counter frequency.
  try:
    fs = float(rate_text)
  except ValueError:
    fs = math.nan
  if not math.isfinite(fs) or fs <= 0:
    raise _header_error(path, f"sampling rate {rate_text!r} is not a positive number "
                        f"in {line!r}")
  sig_len = None
  if len(fields) > 3:
    if not fields[3].isdigit():
      raise _header_error(path, f"sample count {fields[3]!r} is not a non-negative "
                          f"integer in {line!r}")
    sig_len = int(fields[3]) or None  # 0 means unspecified in WFDB.
  return n_sig, fs, sig_len


@functools.lru_cache(maxsize=1024)
def _format_and_gain(fmt_text: str, gain_text: str | None
                     ) -> tuple[str, int, int, int, float, int | None, str] | str:
  """(format, samples per frame, skew, byte offset, gain, baseline or None, units) of
  a signal line's 2nd and 3rd fields, or what is wrong with them. Cached: the lines of
  a header, and the headers of a dataset, repeat the same few."""
  match = _FORMAT.fullmatch(fmt_text)
  if not match or match.group(1) not in _BYTES_PER_SAMPLE:
    return f"format {fmt_text!r} is not a WFDB format"
  fmt, spf, skew, offset = match.groups()
  gain, baseline, units = 0.0, None, "mV"  # WFDB's defaults: uncalibrated, in mV.
  if gain_text is not None:
    gain_match = _GAIN.fullmatch(gain_text)
    if not gain_match:
      return f"gain {gain_text!r} is not GAIN[(BASELINE)][/UNITS]"
    gain = float(gain_match.group(1))
    if gain_match.group(2) is not None:
      baseline = int(gain_match.group(2))
    units = gain_match.group(3) or units
  return fmt, int(spf or 1), int(skew or 0), int(offset or 0), gain, baseline, units


def _parse_signal_line(line: str, path: pathlib.Path) -> SignalSpec:
  # file format gain(baseline)/units resolution zero initial checksum block description
  fields = line.split(maxsplit=8)
  if len(fields) < 2:
    raise _header_error(path, f"signal line {line!r} has no format")
  parsed = _format_and_gain(fields[1], fields[2] if len(fields) > 2 else None)
  if isinstance(parsed, str):
    raise _header_error(path, f"{parsed} in {line!r}")
  fmt, spf, skew, offset, gain, baseline, units = parsed
  integers = fields[3:8]
  if integers and not _INTEGERS.fullmatch(" ".join(integers)):
    for text, what in zip(integers, ("ADC resolution", "ADC zero", "initial value",
                                     "checksum", "block size")):
      if not _INTEGER.fullmatch(text):
        raise _header_error(path, f"{what} {text!r} is not an integer in {line!r}")
  if baseline is None:  # WFDB: the baseline defaults to the ADC zero.
    baseline = int(fields[4]) if len(fields) > 4 else 0
  return SignalSpec(file_name=fields[0], fmt=fmt, samps_per_frame=spf, skew=skew,
                    byte_offset=offset, adc_gain=gain, baseline=baseline, units=units,
                    name=fields[8].strip() if len(fields) > 8 else "")


def _decode(data: bytes) -> str:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return data.decode("latin-1")  # Old headers write micro as byte 0xb5.


def _header_lines(header_file: pathlib.Path) -> tuple[list[str], list[str]]:
  """(the record and signal (or segment) lines, the comments without their `#`) of a
  `.hea` file, stripped, blank lines left out; RecordError when it does not read."""
  try:
    text = _decode(header_file.read_bytes())
  except FileNotFoundError:
    raise records.RecordError(str(header_file), "header file is missing") from None
  except OSError as e:
    raise records.RecordError(str(header_file), f"header does not read: {e}") from e
  lines, comments = [], []
  for line in text.splitlines():
    line = line.strip()
    if line.startswith("#"):
      comments.append(line.strip(" \t#"))
    elif line:
      lines.append(line)
  return lines, comments


def read_header(path: str | pathlib.Path) -> Header:
  """The parsed header of WFDB record `path` (without extension).

  Raises:
    RecordError: naming the `.hea` file when it is missing or a field does not parse
      (see the module docstring), or naming the signal file when the sample count
      must come from it and it is missing or of a format whose size does not give it.
  """
  path = pathlib.Path(path)
  header_file = path.with_name(path.name + ".hea")
  lines, comments = _header_lines(header_file)
  if not lines:
    raise _header_error(header_file, "no record line")
  n_sig, fs, sig_len = _parse_record_line(lines[0], header_file)
  if len(lines) - 1 != n_sig:
    raise _header_error(header_file, f"the record line declares {n_sig} signals, "
                        f"{len(lines) - 1} signal lines follow")
  signals = tuple(_parse_signal_line(line, header_file) for line in lines[1:])
  if sig_len is None:
    sig_len = _length_from_file_size(signals, path.parent, header_file)
  return Header(file=header_file, fs=fs, sig_len=sig_len, signals=signals,
                comments=tuple(comments))


def check_claimed_sizes(header_file: str | pathlib.Path) -> None:
  """RecordError unless the files of the WFDB record `header_file` (its `.hea`) hold
  the samples its header claims: checked before a parser that allocates the claimed
  samples first reads it (ecgdatakit: a header of a few hundred bytes claiming
  20,000,000 samples of 12 null signals would take gigabytes).

  A claim is backed when each signal file the header names is there and holds its
  byte offset + the claimed samples x the bytes of a frame of its format, and the
  null signals (format 0: stored in no file, read as NaN) and null segments ("~")
  claim no more samples than the stored ones. A multi-segment record's segments are
  each checked so, at the length the master header gives them. The numbers are read
  as leniently as the WFDB parsers read them; a field that does not parse is left to
  the parser to refuse. Compressed (FLAC) signal files are not bounded by their size
  (the parsers read them chunk by chunk, or not at all).
  """
  header_file = pathlib.Path(header_file)
  lines, _ = _header_lines(header_file)
  if lines and "/" in lines[0].split()[0]:
    _check_segment_claims(header_file, lines)
  elif lines:
    _check_signal_claims(header_file, lines, _number(lines[0].split(), 3))


def _number(fields: Sequence[str], index: int) -> int | None:
  """`int(fields[index])` (as the WFDB parsers read it), None when absent or not a
  number."""
  try:
    return int(fields[index])
  except (IndexError, ValueError):
    return None


def _check_signal_claims(header_file: pathlib.Path, lines: Sequence[str],
                         samples: int | None) -> None:
  """check_claimed_sizes of a one-segment record of `samples` per signal (None or 0:
  no claim, the file sizes give the count), its header's `lines`."""
  count = _number(lines[0].split(), 1)
  if not samples or samples < 0 or count is None:
    return
  files, null = {}, 0
  for line in lines[1:1 + max(count, 0)]:
    fields = line.split()
    match = _FORMAT.fullmatch(fields[1]) if len(fields) > 1 else None
    if match is None:
      return  # The parser refuses the line before reading any signal.
    fmt, per_frame = match.group(1), int(match.group(2) or 1)
    if fmt == "0":
      null += per_frame
    elif fmt in _BYTES_PER_SAMPLE:
      files.setdefault(fields[0], []).append(
          (_BYTES_PER_SAMPLE[fmt], per_frame, int(match.group(4) or 0)))
  stored = 0
  for name, specs in files.items():
    file = header_file.parent / name
    if name == "~" or not file.is_file():
      raise records.RecordError(str(header_file), f"signal file {file} is missing: "
                                f"the header claims {samples} samples in it")
    if any(size is None for size, _, _ in specs):
      continue  # Compressed.
    frame = sum(size * per_frame for size, per_frame, _ in specs)
    needed = specs[0][2] + math.ceil(samples * frame)
    size = file.stat().st_size
    if size < needed:
      raise records.RecordError(str(file), f"holds {size} bytes; {header_file.name} "
                                f"claims {samples} samples of {len(specs)} signal(s) "
                                f"in it: {needed} bytes")
    stored += sum(per_frame for _, per_frame, _ in specs)
  if null > stored:
    raise records.RecordError(str(header_file), f"the header claims {samples} "
                              f"samples for each of {null} null signal(s) (format 0: "
                              f"stored in no file), more than the {stored} signal(s) "
                              "its files hold")


def _check_segment_claims(header_file: pathlib.Path, lines: Sequence[str]) -> None:
  """check_claimed_sizes of a multi-segment record: each segment's files at the length
  the master header gives it; null segments ("~") no longer than the stored ones."""
  segments = _number(lines[0].split()[0].split("/", 1), 1)
  stored = null = 0
  for line in lines[1:1 + max(segments or 0, 0)]:
    fields = line.split()
    length = _number(fields, 1)
    if length is None or length < 0:
      return  # The parser refuses the line.
    if fields[0] == "~":
      null += length
      continue
    segment = header_file.parent / f"{fields[0]}.hea"
    if not segment.is_file():
      raise records.RecordError(str(header_file), f"segment header {segment} is "
                                "missing")
    segment_lines, _ = _header_lines(segment)
    if length and segment_lines and "/" not in segment_lines[0].split()[0]:
      _check_signal_claims(segment, segment_lines, length)
    stored += length
  if null > stored:
    raise records.RecordError(str(header_file), f"its null segments (~: stored in no "
                              f"file) claim {null} samples, more than the {stored} of "
                              "its stored segments")


def _is_matlab5(file: pathlib.Path) -> bool:
  if file.suffix.lower() != ".mat":
    return False
  with open(file, "rb") as f:
    return f.read(len(_MATLAB5)) == _MATLAB5


def _check_matlab4(file: pathlib.Path, specs: Sequence[SignalSpec], header: Header
                   ) -> None:
  """Refuses a `.mat` file that is not the MATLAB 4 matrix the header describes: the
  Challenge's [signals, samples] little-endian int16 (frames stored like a format-16
  `.dat` after the matrix header, which the byte offset skips)."""
  with open(file, "rb") as f:
    fields = np.frombuffer(f.read(20).ljust(20, b"\0"), "<i4")
  kind, rows, columns, imaginary, name_length = (int(v) for v in fields)
  if (specs[0].fmt != "16" or kind != 30 or rows != len(specs) or imaginary
      or columns < header.sig_len or specs[0].byte_offset != 20 + name_length):
    raise records.RecordError(str(file), f"not the MATLAB 4 int16 [{len(specs)} x "
                              f"{header.sig_len}] matrix at byte "
                              f"{specs[0].byte_offset} that {header.file} describes")


def _frame_bytes(specs: Sequence[SignalSpec]) -> float | None:
  """Bytes per frame of one signal file (None when its format is compressed)."""
  sizes = [_BYTES_PER_SAMPLE[s.fmt] for s in specs]
  if any(size is None for size in sizes):
    return None
  return sum(size * s.samps_per_frame for size, s in zip(sizes, specs))


def _length_from_file_size(signals: Sequence[SignalSpec], directory: pathlib.Path,
                           header_file: pathlib.Path) -> int:
  """Samples per signal from the signal files' sizes (the header gives none)."""
  by_file = {}
  for spec in signals:
    by_file.setdefault(spec.file_name, []).append(spec)
  lengths = []
  for name, specs in by_file.items():
    file = directory / name
    if not file.is_file():
      raise records.RecordError(str(header_file), f"signal file {file} is missing")
    frame = _frame_bytes(specs)
    if frame is None or _is_matlab5(file):
      raise records.RecordError(str(header_file), f"header gives no sample count and "
                                f"the size of {name} does not tell it")
    lengths.append(int((file.stat().st_size - specs[0].byte_offset) // frame))
  return max(0, min(lengths))


def lead_order(header: Header, path: str | None = None,
               leads: Sequence[str] = records.LEADS,
               lead_aliases: dict[str, str] | None = None) -> np.ndarray:
  """[len(leads)] signal indices of `leads` in the record; RecordError (naming `path`,
  default the `.hea` file) when one is missing or given twice. `lead_aliases` renames
  header names first (e.g. {"MLII": "II"})."""
  aliases = {k.strip().lower(): v for k, v in (lead_aliases or {}).items()}
  names = [aliases.get(n.strip().lower(), n) for n in header.sig_name]
  try:
    return signal.standard_lead_order(names, leads)
  except ValueError as e:
    kind = "a 12-lead ECG" if tuple(leads) == records.LEADS else f"an ECG with {leads}"
    raise records.RecordError(path or str(header.file), f"not {kind}: {e}") from e


def to_millivolts(header: Header, order: Sequence[int]) -> np.ndarray:
  """[len(order)] factors turning physical units into mV; RecordError for a signal in
  `order` that is uncalibrated (gain 0, or no gain) or in a unit other than V/mV/uV."""
  factors = []
  for i in order:
    spec = header.signals[i]
    if spec.adc_gain == 0:  # Also what WFDB means by a missing gain.
      raise records.RecordError(str(header.file), f"signal {spec.name or i + 1} has "
                                "gain 0: uncalibrated, its values cannot be made mV")
    if not math.isfinite(spec.adc_gain) or spec.adc_gain < 0:
      raise records.RecordError(str(header.file), f"signal {spec.name or i + 1} has "
                                f"gain {spec.adc_gain:g}: not a positive number")
    unit = spec.units.strip().lower()
    if unit not in _TO_MILLIVOLTS:
      raise records.RecordError(str(header.file), f"signal {spec.name or i + 1} is in "
                                f"{spec.units!r}, not V, mV or uV")
    factors.append(_TO_MILLIVOLTS[unit])
  return np.array(factors)


def _signal_files(header: Header) -> dict[str, tuple[list[int], str]]:
  """{signal file name: (indices of its signals, how it is read)}, in header order,
  after checking that each file is there and long enough. How: "numpy" (formats 16
  and 212), "matlab5" (a CinC Challenge `.mat`, read with scipy) or "wfdb"."""
  files = {}
  for i, spec in enumerate(header.signals):
    files.setdefault(spec.file_name, []).append(i)
  out = {}
  for name, indices in files.items():
    file = header.file.parent / name
    try:
      status = file.stat()
    except OSError:
      status = None
    if status is None or not stat.S_ISREG(status.st_mode):
      raise records.RecordError(str(header.file), f"signal file {file} is missing")
    size = status.st_size
    specs = [header.signals[i] for i in indices]
    if _is_matlab5(file):
      out[name] = (indices, "matlab5")
      continue
    if file.suffix.lower() == ".mat":
      _check_matlab4(file, specs, header)
    frame = _frame_bytes(specs)
    if frame is not None:
      needed = specs[0].byte_offset + math.ceil(header.sig_len * frame)
      if size < needed:
        raise records.RecordError(str(file), f"truncated: {size} bytes, the header of "
                                  f"{header.file} needs {needed}")
    numpy = (specs[0].fmt in _INVALID_SAMPLE and all(
        s.fmt == specs[0].fmt and s.samps_per_frame == 1 and s.skew == 0
        and s.byte_offset == specs[0].byte_offset for s in specs))
    out[name] = (indices, "numpy" if numpy else "wfdb")
  return out


def _read_digital(file: pathlib.Path, specs: Sequence[SignalSpec], start: int,
                  stop: int) -> np.ndarray:
  """[stop - start, len(specs)] int16 samples of one format-16 or -212 file."""
  n, count = len(specs), (stop - start) * len(specs)
  offset = specs[0].byte_offset
  if specs[0].fmt == "16":
    data = np.fromfile(file, "<i2", count=count, offset=offset + start * n * 2)
    if data.size != count:
      raise records.RecordError(str(file), "truncated: ends inside the samples read")
    return data.reshape(stop - start, n)
  # Format 212: each pair of 12-bit samples (of the flattened frames) in 3 bytes: the
  # low 8 bits of the first, the high 4 bits of both, the low 8 bits of the second.
  first = start * n
  pair = first // 2
  triples = (first + count - 2 * pair + 1) // 2
  raw = np.fromfile(file, np.uint8, count=3 * triples, offset=offset + 3 * pair)
  if raw.size < 3 * triples - 1:  # An odd sample count leaves the last byte unused.
    raise records.RecordError(str(file), "truncated: ends inside the samples read")
  raw = np.pad(raw, (0, 3 * triples - raw.size)).reshape(triples, 3).astype(np.int16)
  samples = np.empty((triples, 2), np.int16)
  samples[:, 0] = raw[:, 0] | ((raw[:, 1] & 0x0F) << 8)
  samples[:, 1] = raw[:, 2] | ((raw[:, 1] & 0xF0) << 4)
  samples[samples > 2047] -= 4096
  skip = first - 2 * pair
  return samples.reshape(-1)[skip:skip + count].reshape(stop - start, n)


def _read_matlab5(file: pathlib.Path, header: Header, n: int) -> np.ndarray:
  """[sig_len, n] samples of a CinC Challenge `.mat` file (key `val`)."""
  try:
    val = scipy.io.loadmat(str(file), variable_names=["val"]).get("val")
  except Exception as e:  # pylint: disable=broad-except
    raise records.RecordError(str(file), f"does not read as a MATLAB file: {e}") from e
  if val is None or val.ndim != 2:
    raise records.RecordError(str(file), "no 2-D array 'val'")
  if val.shape[0] != n and val.shape[1] == n:
    val = val.T  # [time, leads] as some converters write it.
  if val.shape[0] != n:
    raise records.RecordError(str(file), f"'val' has shape {val.shape}; {header.file} "
                              f"declares {n} signals in it")
  if val.shape[1] != header.sig_len:
    raise records.RecordError(str(file), f"'val' has {val.shape[1]} samples; "
                              f"{header.file} declares {header.sig_len}")
  return val.T


def read_physical(header: Header, order: Sequence[int], start: int = 0,
                  stop: int | None = None) -> np.ndarray:
  """[stop - start, len(order)] float64 physical values (header units) of the signals
  `order`, frames [start, stop) only, column-major; NaN where a sample is marked
  missing.

  Equals wfdb.rdrecord(...).p_signal[start:stop, order]: (digital - baseline) / gain,
  in float64.
  """
  stop = header.sig_len if stop is None else stop
  files = _signal_files(header)
  if any(how == "wfdb" for _, how in files.values()):
    return _read_with_wfdb(header, order, start, stop)
  blocks, wanted = {}, set(np.asarray(order).tolist())
  for name, (indices, how) in files.items():
    if wanted.intersection(indices):
      file = header.file.parent / name
      if how == "matlab5":
        blocks[name] = _read_matlab5(file, header, len(indices))[start:stop]
      else:
        blocks[name] = _read_digital(file, [header.signals[i] for i in indices],
                                     start, stop)
  specs = [header.signals[i] for i in order]
  where = [(s.file_name, files[s.file_name][0].index(i)) for s, i in zip(specs, order)]
  # Column-major (each lead contiguous): the conversion, and the per-lead checks of
  # the record (peak-to-peak, amplitude), run several times faster than on [time, lead]
  # rows of 12 values.
  if len(blocks) == 1:
    block = next(iter(blocks.values()))
    digital = block.T[[column for _, column in where]].T
  else:
    digital = np.stack([blocks[name][:, column] for name, column in where]).T
  # wfdb's arithmetic exactly (float64, subtract, divide), so the values are equal.
  physical = digital.astype(np.float64)
  baselines = [s.baseline for s in specs]
  if any(baselines):
    np.subtract(physical, baselines, physical)
  np.divide(physical, [s.adc_gain for s in specs], physical)
  fmts = {s.fmt for s in specs}
  if len(fmts) == 1:
    value = _INVALID_SAMPLE.get(fmts.pop())
    if value is not None:
      missing = digital == value
      if missing.any():
        physical[missing] = np.nan
  else:
    for j, spec in enumerate(specs):
      if spec.fmt in _INVALID_SAMPLE:
        physical[digital[:, j] == _INVALID_SAMPLE[spec.fmt], j] = np.nan
  return physical


def _read_with_wfdb(header: Header, order: Sequence[int], start: int,
                    stop: int) -> np.ndarray:
  """read_physical by wfdb.rdrecord, for the other formats. Its header parse agrees
  with ours: any field it would have replaced by a default, read_header refused."""
  try:
    record = wfdb.rdrecord(str(header.record), physical=True, sampfrom=start,
                           sampto=stop)
  except Exception as e:  # pylint: disable=broad-except
    raise records.RecordError(str(header.record), f"signal does not read: {e}") from e
  p_signal = np.asarray(record.p_signal, np.float64)
  if p_signal.shape != (stop - start, header.n_sig):
    raise records.RecordError(str(header.record), f"signal has shape {p_signal.shape}, "
                              f"the header declares {(stop - start, header.n_sig)}")
  return np.asfortranarray(p_signal[:, list(order)])


def read_record(path: str | pathlib.Path, sampling_rate: float,
                leads: Sequence[str] = records.LEADS,
                lead_aliases: dict[str, str] | None = None,
                span: tuple[float, float] | None = None,
                header: Header | None = None) -> WFDBRecord:
  """Reads the WFDB record `path` (without extension) as `leads` (default the standard
  12) in mV, resampled to `sampling_rate` Hz.

  span: (start, stop) seconds to read only part of a long record: the samples around
    it are read at the native rate (with a margin for the resampling filter) and cut
    at the target rate, so memory stays bounded whatever the record's length.
  header: `read_header(path)` when the caller has it already.
  """
  header = header or read_header(path)
  order = lead_order(header, None, leads, lead_aliases)
  factors = to_millivolts(header, order)  # Refuses bad units and gains before reading.
  if span is None:
    read_from, read_to, cut = 0, header.sig_len, None
  else:
    read_from, read_to, cut = span_samples(header, span, sampling_rate)
  ecg = read_physical(header, order, read_from, read_to)
  if np.any(factors != 1.0):
    ecg *= factors
  if header.fs == sampling_rate:
    ecg = ecg.astype(np.float32)  # What resample returns, without its ratio search.
  else:
    try:
      ecg = np.asfortranarray(signal.resample(ecg, header.fs, sampling_rate))
    except ValueError as e:
      raise records.RecordError(str(header.file), str(e)) from e
  if cut is not None:
    ecg = ecg[cut[0]:cut[1]]
    if len(ecg) != cut[1] - cut[0]:
      raise records.RecordError(str(header.file), f"span {span} s runs past the "
                                "record's end")
  return WFDBRecord(ecg=ecg, sampling_rate=sampling_rate,
                    comments=list(header.comments))


def span_samples(header: Header, span: tuple[float, float], sampling_rate: float
                 ) -> tuple[int, int, tuple[int, int]]:
  """(native first sample, native end sample, (first, end) at the target rate relative
  to the resampled read) for the span (start, stop) seconds."""
  start, stop = span
  if not 0 <= start < stop <= header.duration + 1e-9:
    raise records.RecordError(str(header.file), f"span {span} s is outside the record "
                              f"(0 to {header.duration:g} s)")
  up, down = signal.resample_factors(header.fs, sampling_rate)
  margin = int(header.fs)  # One second each side for the resampling filter.
  # Start on a multiple of `down`, so the read's first sample is a target-rate sample.
  read_from = max(0, int(start * header.fs) - margin) // down * down
  read_to = min(header.sig_len, int(np.ceil(stop * header.fs)) + margin)
  first = int(round(start * sampling_rate)) - read_from * up // down
  count = int(round((stop - start) * sampling_rate))
  return read_from, read_to, (first, first + count)
