import ml_collections
import numpy as np

from configs import common
from crema_jax.input import augment

RATE = 500


def _signal():
  t = np.arange(5000) / RATE
  return np.stack([np.sin(2 * np.pi * (1 + i) * t) for i in range(12)], 1).astype(np.float32)


def test_crop_random_centred_and_padded():
  x = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 12), np.float32)
  np.testing.assert_array_equal(augment.crop(x, 40, None)[:, 0], np.arange(30, 70))
  starts = {augment.crop(x, 40, np.random.default_rng(s))[0, 0] for s in range(20)}
  assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 60
  padded = augment.crop(x[:30], 40, None)
  assert padded.shape == (40, 12)
  np.testing.assert_array_equal(padded[30:], 0)


def test_amplitude_scale_bounds():
  x = _signal()
  for s in range(10):
    y = augment.amplitude_scale(x, np.random.default_rng(s), 0.2)
    ratio = y[100, 0] / x[100, 0]
    assert 0.8 <= ratio <= 1.2
    np.testing.assert_allclose(y, x * ratio, rtol=1e-5)


def test_gaussian_noise_std_bounded():
  x = np.zeros((5000, 12), np.float32)
  stds = [augment.gaussian_noise(x, np.random.default_rng(s), 0.1).std() for s in range(10)]
  assert max(stds) <= 0.1 * 1.05 and max(stds) > 0.01


def test_baseline_wander_is_slow_and_bounded():
  x = np.zeros((5000, 12), np.float32)
  y = augment.baseline_wander(x, np.random.default_rng(0), 0.3, 0.5, RATE)
  assert np.abs(y).max() <= 0.3 + 1e-6 and np.abs(y).max() > 0
  spectrum = np.abs(np.fft.rfft(y, axis=0)).sum(1)
  freqs = np.fft.rfftfreq(5000, 1 / RATE)
  assert freqs[np.argmax(spectrum)] <= 0.5


def test_lead_dropout_zeroes_whole_leads_and_keeps_one():
  x = _signal()
  y = augment.lead_dropout(x, np.random.default_rng(0), 0.5)
  zeroed = np.all(y == 0, axis=0)
  assert 0 < zeroed.sum() < 12
  np.testing.assert_array_equal(y[:, ~zeroed], x[:, ~zeroed])
  assert not np.all(augment.lead_dropout(x, np.random.default_rng(1), 1.0) == 0)


def test_time_shift_moves_signal_and_pads_edges():
  x = np.arange(50, dtype=np.float32)[:, None] * np.ones((1, 12), np.float32)
  for s in range(10):
    y = augment.time_shift(x, np.random.default_rng(s), 5)
    shift = int(y[25, 0] - x[25, 0])
    assert abs(shift) <= 5
    np.testing.assert_array_equal(y[10:40, 0], x[10 + shift:40 + shift, 0])


def test_all_off_is_identity():
  config = common.augment_config()
  for name in ("scale", "noise_std", "wander_amplitude", "lead_dropout",
               "max_shift_seconds"):
    config[name] = 0.0
  x = _signal()
  np.testing.assert_array_equal(augment.augment(x, np.random.default_rng(0), config, RATE), x)


def test_augment_is_deterministic_per_seed():
  config = common.augment_config()
  x = _signal()
  a = augment.augment(x, np.random.default_rng(3), config, RATE)
  b = augment.augment(x, np.random.default_rng(3), config, RATE)
  c = augment.augment(x, np.random.default_rng(4), config, RATE)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert isinstance(config, ml_collections.ConfigDict)
