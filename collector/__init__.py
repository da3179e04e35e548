"""Ingestion: the canonical ingest API, CloudEvents content modes, dead letters."""
