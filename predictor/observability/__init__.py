"""Logs, Prometheus metrics (requests, drift, GPU), request tracking and thread names."""
