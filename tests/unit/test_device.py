"""The views' transforms: host crops and time shifts, and on the device each
augmentation's effect, standardisation, MAE masks and the batch schema, drawn from
(seed, step, example). Views are [leads, time]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from crema_jax import masking
from crema_jax.input import device
from crema_jax.input import views

RATE = 500
SEEDS = 16


def _signal():
  """[12, 5000] float32: lead i a sinusoid of 1 + i Hz."""
  t = np.arange(5000) / RATE
  return np.stack([np.sin(2 * np.pi * (1 + i) * t) for i in range(12)]).astype(np.float32)


def keys(n: int = SEEDS, seed: int = 0):
  return jax.random.split(jax.random.key(seed), n)


def over_keys(fn, ks, x, *amounts):
  """fn(key, x, *amounts) for each key: [n, ...] (one compile; amounts are static)."""
  return jax.jit(jax.vmap(lambda k, v: fn(k, v, *amounts), in_axes=(0, None)))(ks, x)


# ------------------------------------------------------------------- host crops
def _ramp(length: int) -> np.ndarray:
  """A stored record [length, 12] float16: sample t of lead l is t + 100 l (exact)."""
  return (np.arange(length)[:, None] + 100 * np.arange(12)[None]).astype(np.float16)


def test_crop_random_centred_padded_and_leads_first():
  x = _ramp(100)
  centred, valid = views.crop(x, 40, None)
  assert centred.shape == (12, 40) and valid == 40  # [leads, time]: the device's layout.
  np.testing.assert_array_equal(centred[0], np.arange(30, 70))
  np.testing.assert_array_equal(centred[3], np.arange(30, 70) + 300)
  starts = {float(views.crop(x, 40, np.random.default_rng(s))[0][0, 0]) for s in range(20)}
  assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 60
  padded, valid = views.crop(x[:30], 40, None)
  assert padded.dtype == np.float16 and valid == 30  # Sliced, not cast.
  np.testing.assert_array_equal(padded[:, 30:], 0)
  crops, valid = views._crops([x, x[:30], x[:40]], 40, None)  # pylint: disable=protected-access
  np.testing.assert_array_equal(valid, [40, 30, 40])  # Samples of signal per crop.
  np.testing.assert_array_equal(crops[1], padded)


def test_time_shift_is_a_slice_with_edge_padding():
  x = _ramp(50)
  seen = set()
  for seed in range(40):
    y, valid = views.crop(x, 50, np.random.default_rng(seed), max_shift=5)
    shift = int(x[25, 0]) - int(y[0, 25])  # y[t] = x[t - shift].
    seen.add(shift)
    assert abs(shift) <= 5 and valid == 50
    np.testing.assert_array_equal(y[:, 10:40], x[10 - shift:40 - shift].T)
    if shift > 0:  # The first value repeats at the start ...
      np.testing.assert_array_equal(y[:, :shift], np.repeat(x[:1].T, shift, 1))
    elif shift < 0:  # ... and the last at the end.
      np.testing.assert_array_equal(y[:, shift:], np.repeat(x[-1:].T, -shift, 1))
  assert len(seen) > 6


def test_time_shift_of_a_short_record_keeps_its_padding():
  x = _ramp(30)
  for seed in range(30):
    y, valid = views.crop(x, 40, np.random.default_rng(seed), max_shift=5)
    shift = valid - 30  # Later: its first value repeats; earlier: it loses samples.
    assert abs(shift) <= 5
    np.testing.assert_array_equal(y[:, valid:], 0)
    start = max(shift, 0)
    np.testing.assert_array_equal(y[:, start:valid], x[start - shift:valid - shift].T)
    np.testing.assert_array_equal(y[:, :start], np.repeat(x[:1].T, start, 1))


# ---------------------------------------------------------------- augmentations
def test_amplitude_scale_bounds_and_spread():
  x = _signal()
  y = np.asarray(over_keys(device.amplitude_scale, keys(), x, 0.2))
  ratio = y[:, 0, 100] / x[0, 100]
  assert ratio.min() >= 0.8 and ratio.max() <= 1.2 and ratio.std() > 0.05
  np.testing.assert_allclose(y, ratio[:, None, None] * x[None], rtol=1e-5, atol=1e-6)


def test_gaussian_noise_std_bounded():
  x = np.zeros((12, 5000), np.float32)
  stds = np.asarray(over_keys(device.gaussian_noise, keys(), x, 0.1)).std(axis=(1, 2))
  assert stds.max() <= 0.1 * 1.05 and stds.max() > 0.03 and stds.min() < 0.07


def test_baseline_wander_is_slow_and_bounded():
  x = np.zeros((12, 5000), np.float32)
  y = np.asarray(over_keys(device.baseline_wander, keys(4), x, 0.3, 0.5, RATE))
  assert np.abs(y).max() <= 0.3 + 1e-5 and np.abs(y).max() > 0
  spectrum = np.abs(np.fft.rfft(y, axis=2)).sum(1)
  freqs = np.fft.rfftfreq(5000, 1 / RATE)
  assert freqs[np.argmax(spectrum, axis=1)].max() <= 0.5


def test_baseline_wander_is_one_sinusoid_per_lead():
  x = np.zeros((12, 5000), np.float32)
  y = np.asarray(over_keys(device.baseline_wander, keys(3), x, 0.3, 0.5, RATE))
  t = np.arange(5000) / RATE
  for wave in y:  # Every lead a sin(2 pi f t + phase_l) with the view's one f.
    def misfit(f):
      basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], 1)
      coef = np.linalg.lstsq(basis, wave.T, rcond=None)[0]
      return np.abs(basis @ coef - wave.T).max(), coef
    coarse = min(np.arange(0.05, 0.5, 0.002), key=lambda f: misfit(f)[0])
    error, coef = min((misfit(f) for f in np.arange(coarse - 0.002, coarse + 0.002,
                                                    0.00005)), key=lambda fit: fit[0])
    assert error < 2e-3 * np.abs(wave).max() + 1e-5
    assert np.sqrt((coef ** 2).sum(0)).max() <= 0.3 + 1e-4  # Amplitudes within bound.


def test_lead_dropout_zeroes_whole_leads_and_keeps_one():
  x = _signal()
  y = np.asarray(over_keys(device.lead_dropout, keys(), x, 0.5))
  zeroed = np.all(y == 0, axis=2)  # [seeds, leads]
  assert 0 < zeroed.sum(1).min() and zeroed.sum(1).max() < 12
  for yi, z in zip(y, zeroed):
    np.testing.assert_array_equal(yi[~z], x[~z])
  np.testing.assert_allclose(zeroed.mean(), 0.5, atol=0.15)
  every = np.all(np.asarray(over_keys(device.lead_dropout, keys(), x, 1.0)) == 0, axis=2)
  np.testing.assert_array_equal(every.sum(1), 11)  # p = 1 still keeps one lead.


def test_all_off_is_identity_and_on_is_deterministic_per_key():
  off = common.augment_config()
  for name in ("scale", "noise_std", "wander_amplitude", "lead_dropout",
               "max_shift_seconds"):
    off[name] = 0.0
  x = _signal()
  np.testing.assert_array_equal(device.augment(keys(1)[0], x, off, RATE), x)
  on = common.augment_config()
  run = jax.jit(lambda k: device.augment(k, x, on, RATE))
  a, b, c = run(keys(2)[0]), run(keys(2)[0]), run(keys(2)[1])
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_standardize_per_lead_and_flat_leads_are_zero():
  x = _signal() * 3.0 + 2.0
  x[4] = 7.0  # A flat (or dropped) lead.
  y = np.asarray(jax.jit(device.standardize)(x))
  np.testing.assert_allclose(np.delete(y, 4, 0).mean(1), 0, atol=1e-5)
  np.testing.assert_allclose(np.delete(y, 4, 0).std(1), 1, atol=1e-4)
  np.testing.assert_array_equal(y[4], 0)


def test_standardize_keeps_its_precision_under_a_large_offset():
  x = _signal() * 0.05 + 20.0  # 50 uV waves on a 20 mV offset (a bad electrode).
  x[:, 0] = 20.0  # Each lead's first sample, which the moments are taken about, at 20.
  y = np.asarray(jax.jit(device.standardize)(x, 4000))
  reference = (x[:, :4000] - x[:, :4000].mean(1, keepdims=True)) / x[:, :4000].std(
      1, keepdims=True)
  np.testing.assert_allclose(y[:, :4000], reference, atol=2e-3)


def test_standardize_over_the_valid_samples_only():
  x = _signal() * 3.0 + 2.0
  x[:, 3000:] = 0.0  # A 6 s record zero-padded to 10 s.
  y = np.asarray(jax.jit(device.standardize)(x, 3000))
  np.testing.assert_allclose(y[:, :3000], np.asarray(device.standardize(x[:, :3000])),
                             atol=1e-5)
  np.testing.assert_array_equal(y[:, 3000:], 0)


def test_padding_is_masked_first_and_flagged():
  config = common.base_config("tiny", "hl")
  transform = device.ViewTransform.from_config(config)
  n, patch = transform.num_tokens, config.model.patch_size
  valid = np.array([[5000, 3000], [5000, 600]], np.int32)  # Samples of signal.
  signals = np.repeat(_signal()[None, None], 2, 0).repeat(2, 1)
  signals[1, 1, :, 600:] = 0.0
  out = jax.jit(lambda: device.pretrain_views(
      transform, device.example_keys(0, 0, 2), signals.astype(np.float16), valid))()
  tokens = masking.token_valid(valid, 5000, patch, 12, config.model.token_layout)
  assert tokens[0, 0].all() and tokens[0, 1].sum() == n * 3000 // 5000
  for b, v in [(0, 1), (1, 1)]:
    keep, masked = np.asarray(out["ids_keep"][b, v]), np.asarray(out["ids_masked"][b, v])
    np.testing.assert_array_equal(out["keep_valid"][b, v], tokens[b, v][keep])
    np.testing.assert_array_equal(out["masked_valid"][b, v], tokens[b, v][masked])
    assert np.asarray(out["signals"])[b, v, :, valid[b, v]:].max() == 0  # Still padding.
  # 60% of signal: every visible token holds signal (25% of them are kept).
  assert out["keep_valid"][0, 1].all()
  # 12% of signal, under the 25% kept: all signal tokens visible, padding fills up.
  assert out["keep_valid"][1, 1].sum() == tokens[1, 1].sum()
  assert not out["masked_valid"][1, 1].any()


# ------------------------------------------------------------------------ masks
@pytest.mark.parametrize("n,ratio,m", [(40, 0.75, 30), (40, 0.0, 0), (10, 0.95, 9),
                                       (480, 0.5, 240), (3, 0.5, 2)])
def test_random_mask_shapes_ratio_and_order(n, ratio, m):
  keep, masked = jax.jit(device.random_mask, static_argnums=(1, 2))(keys(1)[0], n, ratio)
  keep, masked = np.asarray(keep), np.asarray(masked)
  assert masking.num_masked(n, ratio) == m
  assert keep.shape == (n - m,) and masked.shape == (m,)
  assert keep.dtype == masked.dtype == np.int32
  np.testing.assert_array_equal(np.sort(np.concatenate([keep, masked])), np.arange(n))
  assert np.all(np.diff(keep) > 0) and np.all(np.diff(masked) > 0)


def test_masks_are_uniform_over_tokens_and_vary_by_key():
  draw = jax.jit(jax.vmap(lambda k: device.random_mask(k, 40, 0.75)[1]))
  masked = np.asarray(draw(keys(2000)))  # [2000, 30]
  counts = np.bincount(masked.ravel(), minlength=40) / 2000
  np.testing.assert_allclose(counts, 0.75, atol=0.05)
  assert len({row.tobytes() for row in masked[:50]}) == 50


# ----------------------------------------------------------------- whole batches
def test_pretrain_views_follow_the_schema_and_the_keys():
  config = common.base_config("tiny", "hl")
  transform = device.ViewTransform.from_config(config)
  rng = np.random.default_rng(0)
  ecg = rng.standard_normal((4, 1, 12, 5000)).astype(np.float16)
  signals = np.repeat(ecg, 3, axis=1)  # The same crop in each of 3 views.
  make = jax.jit(lambda step: device.pretrain_views(
      transform, device.example_keys(config.seed, step, 4), signals,
      np.full((4, 3), 5000, np.int32)))
  out = make(7)
  n = transform.num_tokens
  k = n - masking.num_masked(n, config.mask_ratio)
  assert out["signals"].shape == (4, 3, 12, 5000) and out["signals"].dtype == jnp.float32
  assert out["ids_keep"].shape == (4, 3, k) and out["ids_masked"].shape == (4, 3, n - k)
  x = np.asarray(out["signals"])
  assert not np.allclose(x[:, 0], x[:, 1])  # Views of one crop differ (own keys)...
  assert not np.array_equal(out["ids_keep"][:, 0], out["ids_keep"][:, 1])
  np.testing.assert_array_equal(make(7)["signals"], x)  # ... and are reproducible,
  assert not np.allclose(make(8)["signals"], x)  # ... and another step draws anew.
  # Standardised before augmenting: near zero mean, unit scale per lead.
  assert np.abs(x.mean(axis=3)).max() < 0.5 and 0.5 < x.std(axis=3).mean() < 1.6
