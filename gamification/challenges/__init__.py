"""Challenges ("do X N times within a period") and the badges completing them earns.

`definitions` validates an admin's input and names periods (pure), `progress` reads
counts and completions, `awarding` pays completions inside the events' transaction,
`service` is what the API calls.
"""
