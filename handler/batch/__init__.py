"""Batch classification of a file of texts: formats in, JSON Lines out. No AWS knowledge."""
