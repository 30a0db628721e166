"""Live segment changes: the change log relayed to Redis pub/sub and fanned out to subscribers."""
