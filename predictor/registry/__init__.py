"""Experiment tracking and the model registry in MLflow: the optional `mlflow` extra.

Only the modules that talk to a server import MLflow, and the CLI imports them only when a command asks for MLflow, so
the core install runs without it.
"""
