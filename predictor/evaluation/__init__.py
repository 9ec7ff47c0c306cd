"""Retrieval quality of a model, offline and through a server (`image-search eval`); the server never imports it."""
