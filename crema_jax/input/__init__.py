"""Online input: what feeds the step. `views` (one record -> augmented, masked views),
`augment` (the view augmentations), `pipeline` (Grain chains over prepared shards)."""
