"""A/B tests on segments: definitions, sticky assignment, exposure actions, results and their statistics."""
