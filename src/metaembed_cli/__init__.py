"""Command-line interface for metaembed (kept apart from the library)."""
