"""Predictive churn: a per-program model of "no purchase in the next 7 days" and its stored scores.

`features.py` (pure) turns a member's daily aggregates into features as of a cutoff,
`history.py` loads what it needs, `model.py` fits and evaluates the model (scikit-learn,
the optional `predict` extra, imported only there), `service.py` trains, scores every
member and refreshes the segments that read `churnRisk7d`. See docs/analytics.md.
"""
