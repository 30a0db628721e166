"""Database plumbing: column types, the engine, the unit of work."""
