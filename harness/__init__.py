"""Real processes that tests and benchmarks run against: Milvus, MLflow, Prometheus, the predictor, a browser, a TCP
forwarder for outages, and polling helpers. One home that both `tests/` and `benchmarks/` import; not shipped."""
