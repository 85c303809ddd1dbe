import numpy as np
import pytest

from crema_jax import masking


@pytest.mark.parametrize("layout,expected", [("joint", 40), ("per_lead", 480)])
def test_num_tokens(layout, expected):
  assert masking.num_tokens(5000, 125, 12, layout) == expected


def test_num_tokens_refuses_patch_that_does_not_divide():
  with pytest.raises(ValueError, match="seq_len=5000 is not a multiple of patch_size=60"):
    masking.num_tokens(5000, 60, 12, "joint")


@pytest.mark.parametrize("n,ratio,m", [(40, 0.75, 30), (40, 0.0, 0), (10, 0.95, 9),
                                       (480, 0.5, 240), (3, 0.5, 2)])
def test_random_masking_shapes_and_ratio(n, ratio, m):
  keep, masked = masking.random_masking(np.random.default_rng(0), n, ratio)
  assert masking.num_masked(n, ratio) == m
  assert keep.shape == (n - m,) and masked.shape == (m,)
  assert keep.dtype == masked.dtype == np.int32
  np.testing.assert_array_equal(np.sort(np.concatenate([keep, masked])), np.arange(n))
  assert np.all(np.diff(keep) > 0) and np.all(np.diff(masked) > 0)


def test_random_masking_is_seeded_and_varies():
  a = masking.random_masking(np.random.default_rng(1), 40, 0.75)
  b = masking.random_masking(np.random.default_rng(1), 40, 0.75)
  c = masking.random_masking(np.random.default_rng(2), 40, 0.75)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])


def test_masking_is_uniform_over_tokens():
  counts = np.zeros(40)
  rng = np.random.default_rng(0)
  for _ in range(2000):
    counts[masking.random_masking(rng, 40, 0.75)[1]] += 1
  np.testing.assert_allclose(counts / 2000, 0.75, atol=0.05)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_mask_ratio_refused(ratio):
  with pytest.raises(ValueError, match="mask_ratio"):
    masking.num_masked(40, ratio)
