"""PTB-XL evaluation of a pretraining checkpoint. `run.py` reads top-down and puts the
parts together: restore (config and encoder of a checkpoint), splits (label fractions
by patient), features, probe (linear), finetune, scores, shifts (robustness), plots."""
