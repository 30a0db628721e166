"""Governance: who changed what (the audit log)."""
