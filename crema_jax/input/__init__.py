"""Online input: what feeds the step. `views` (host: one prepared record -> the raw
crops of its views), `pipeline` (Grain chains over prepared shards), `device` (in the
step: standardisation, augmentation and MAE masks; the batch schema)."""
