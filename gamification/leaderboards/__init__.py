"""Leaderboards: board definitions, standings computed from the ledger, Redis sorted sets kept current
by the standings feed, frozen snapshots, rebuild and reconciliation (docs/leaderboards.md)."""
