import pytest

from crema_jax import masking


@pytest.mark.parametrize("layout,expected", [("joint", 40), ("per_lead", 480)])
def test_num_tokens(layout, expected):
  assert masking.num_tokens(5000, 125, 12, layout) == expected


def test_num_tokens_refuses_patch_that_does_not_divide():
  with pytest.raises(ValueError, match="seq_len=5000 is not a multiple of patch_size=60"):
    masking.num_tokens(5000, 60, 12, "joint")


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_mask_ratio_refused(ratio):
  with pytest.raises(ValueError, match="mask_ratio"):
    masking.num_masked(40, ratio)
