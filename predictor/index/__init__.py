"""The Milvus side: access, collections and their schema, vector index settings, aliases, ingestion, manifests.

Nothing here imports torch: ingestion takes any embedder with the Backbone's interface.
"""
