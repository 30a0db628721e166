"""The loyalty domain: members, events, the points ledger and their rules.

Imports nothing from api/, gamification/ or fraud/: dependencies point inward.
"""
