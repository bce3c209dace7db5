"""Revisioned key/value storage for the API server (kine-style log)."""
