"""Stores: the metadata database (SQLite) and the content-addressed artifact store."""
