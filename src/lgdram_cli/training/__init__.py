"""Training: the run spec, the training loop, evaluation, checkpoints, distributed set-up."""
