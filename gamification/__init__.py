"""Leaderboards, streaks, challenges and rewards (see DESIGN.md, Gamification)."""
