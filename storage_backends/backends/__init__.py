"""One storage backend a file."""
