"""Evaluation: off-policy estimates, model evaluation, the promotion gate and the model registry."""
