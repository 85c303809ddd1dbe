"""What a trained CREMA encoder is on disk, and how it is read: one format below both
the evaluation and the inference jobs.

A package is a folder that holds everything needed to use an encoder, and nothing
outside it is read: the parameters, the model config, the preprocessing contract
(`preprocessing`: rate, leads, seq_len, normalisation; pooling is in the model config),
the provenance recorded at pretraining (data, ECG count, leakage report) and a
`package.json` with the sha256 of every file (`manifest`). Two kinds:
- a pretraining checkpoint step, `WORKDIR/checkpoints/STEP/` (`encoder`),
- a classifier folder, `EVAL_WORKDIR/classifiers/TASK/` (`classifier`).
`verify` checks a package's files against its manifest and names the damaged ones.
"""
