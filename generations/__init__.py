"""Generating images upstream, recording them, and keeping their bytes."""
