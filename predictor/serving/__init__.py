"""The server's machinery: KServe integration, settings, drain, request size, deadlines, batching, the search pool and
the decode executor. The assembly of a server from these is predictor/server.py."""
