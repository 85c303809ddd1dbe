"""The parts of PTB-XL evaluation that `crema_jax.evaluate` puts together: scores,
label fractions, robustness shifts, features, linear probing, fine-tuning, plots."""
