"""Shared core of every step: errors, config loading and checks, Parquet I/O and provenance, code
hashes, progress, the command line."""
