"""Embedding model, template protection, encrypted cache and the 1:N matcher."""
