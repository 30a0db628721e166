"""Campaigns: per-segment triggers, the transactional outbox, messages and webhooks (docs/triggers.md)."""
