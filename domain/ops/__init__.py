"""What operators need from the engine: log context, metrics, backlog gauges, statistics checks, retention."""
