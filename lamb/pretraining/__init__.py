"""BERT pre-training, the library behind `lamb.run_pretraining`: its flags,
the output folder's records, checkpoints, the training monitor and loop."""
