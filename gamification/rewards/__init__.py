"""The rewards catalogue: items bought with points, limited stock, priority access windows by rank
(docs/rewards.md)."""
