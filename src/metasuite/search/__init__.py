"""Hyper-parameter search over the suite's templates (Optuna only in engine.py)."""
