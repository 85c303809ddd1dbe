"""PTB-XL evaluation of a pretraining checkpoint. `run.py` reads top-down and puts the
parts together: config_check, restore (config and encoder of a checkpoint), splits
(label fractions by patient), fits (each fit's training set, planned), features,
fitting (encoders, probe or fine-tune fits, scoring), probe (linear), finetune, scores,
the analyses of the primary fits in `evaluators/` (robustness under `shifts`, subgroups,
reduced leads, other sources, paired differences), classifiers, report, plots."""
