"""Canary analysis against Prometheus (`image-search rollout`); the server never imports it."""
