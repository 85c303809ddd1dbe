"""Resampling, filtering, standardisation and lead-name mapping on known signals."""

import numpy as np
import pytest

from crema_jax.data import records
from crema_jax.data import signal


def _sine(freq_hz: float, rate: float, seconds: float = 10.0,
          leads: int = 12) -> np.ndarray:
  """[time, leads] sines of freq_hz with lead-dependent amplitude and phase."""
  t = np.arange(int(round(seconds * rate))) / rate
  amp = 1.0 + 0.1 * np.arange(leads)
  phase = 0.3 * np.arange(leads)
  return amp * np.sin(2 * np.pi * freq_hz * t[:, None] + phase)


def _dominant_hz(x: np.ndarray, rate: float) -> float:
  """The frequency of the largest spectral peak of a 1-D signal."""
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("from_rate,to_rate,expected_len", [
    (500, 100, 1000), (400, 500, 5000), (257, 500, 5000), (1000, 500, 5000),
    (360, 500, 5000), (500, 500, 5000)])
def test_resample_length_and_frequency(from_rate, to_rate, expected_len):
  x = _sine(7.0, from_rate)
  y = signal.resample(x, from_rate, to_rate)
  assert y.shape == (expected_len, 12)
  assert y.dtype == np.float32
  for lead in (0, 11):
    assert _dominant_hz(y[:, lead], to_rate) == pytest.approx(7.0, abs=0.1)
  # Away from the edges the samples match the sine evaluated at the new times.
  expected = _sine(7.0, to_rate)[:expected_len]
  edge = to_rate // 2
  np.testing.assert_allclose(y[edge:-edge], expected[edge:-edge], atol=2e-2)


def test_resample_keeps_dc_offset_without_edge_transient():
  x = np.full((5000, 12), 0.75)
  y = signal.resample(x, 500, 100)
  np.testing.assert_allclose(y, 0.75, atol=1e-5)


def test_resample_factors():
  assert signal.resample_factors(500, 100) == (1, 5)
  assert signal.resample_factors(257, 500) == (500, 257)
  assert signal.resample_factors(400.0, 500.0) == (5, 4)
  assert signal.resample_factors(np.int64(360), np.float32(500)) == (25, 18)


@pytest.mark.parametrize("from_rate,to_rate,message", [
    (0, 500, "source rate 0"), (-250, 500, "source rate -250"),
    (500, 0, "target rate 0"), (float("nan"), 500, "source rate nan"),
    (float("inf"), 500, "source rate inf"), (None, 500, "source rate None"),
    ("500", 500, "source rate '500'"), (1e-9, 500, "ratio"),
    (499.9, 500, "ratio"), (1009, 1013, "ratio")])
def test_resample_refuses_bad_rates(from_rate, to_rate, message):
  with pytest.raises(ValueError, match="cannot resample") as info:
    signal.resample(np.zeros((100, 12)), from_rate, to_rate)
  assert message in str(info.value)


def test_standard_lead_order_variants():
  names = ["v6", "V5", "v4", "V3", "v2", "V1", "AVF", "avl", "aVR", "DIII", "dii", "DI"]
  order = signal.standard_lead_order(names)
  assert order.tolist() == list(range(11, -1, -1))
  assert [names[i] for i in order][:6] == ["DI", "dii", "DIII", "aVR", "avl", "AVF"]
  # Extra non-standard leads (PTB's Frank leads) are ignored.
  ptb = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6",
         "vx", "vy", "vz"]
  assert signal.standard_lead_order(ptb).tolist() == list(range(12))
  # MIMIC-IV-ECG writes aVF before aVL.
  mimic = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
  assert signal.standard_lead_order(mimic).tolist()[3:6] == [3, 5, 4]


def test_canonical_lead_name():
  assert signal.canonical_lead_name("AVR") == "aVR"
  assert signal.canonical_lead_name(" avl ") == "aVL"
  assert signal.canonical_lead_name("i") == "I"
  assert signal.canonical_lead_name("MLII") is None
  assert {signal.canonical_lead_name(lead) for lead in records.LEADS} == set(records.LEADS)


def test_standard_lead_order_names_missing_leads():
  with pytest.raises(ValueError, match=r"missing lead\(s\) I, II, III, aVR, aVL, aVF, V1, V2, "
                     r"V3, V4, V6 \(record has MLII, V5\)"):
    signal.standard_lead_order(["MLII", "V5"])
  with pytest.raises(ValueError, match=r"missing lead\(s\) V6 \(record has I, II,"):
    signal.standard_lead_order(list(records.LEADS[:11]))
  with pytest.raises(ValueError, match="lead aVR appears twice"):
    signal.standard_lead_order(list(records.LEADS) + ["AVR"])


def test_stored_signal_refuses_what_float16_or_physiology_cannot_hold():
  x = np.random.default_rng(0).normal(0, 0.5, (1000, 12)).astype(np.float32)
  np.testing.assert_array_equal(records.stored_signal(x, "r"), x.astype(np.float16))
  in_uv = x.copy()
  in_uv[:, 7] = 70_000.0  # Finite in float32, inf once stored as float16.
  with pytest.raises(records.RecordError, match=r"r: lead\(s\) V2 not finite"):
    records.stored_signal(in_uv, "r")
  gain_of_one = x.copy()
  gain_of_one[:, 0] *= 1000  # Read with a gain of 1 instead of 1000.
  with pytest.raises(records.RecordError, match=r"beyond 30 mV in lead\(s\) I "):
    records.stored_signal(gain_of_one, "r")
  assert records.stored_signal(gain_of_one, "r", max_amplitude_mv=0).dtype == np.float16
