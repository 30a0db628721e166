"""Segment analytics: set-based SQL over the change log, memberships, aggregates and events."""
