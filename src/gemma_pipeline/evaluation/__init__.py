"""Scoring a model and summarizing the scores.

One engine answers every request (``engine.py``: ``loglikelihood``, ``generate_until``); the
benchmark tasks are data (``tasks/``) and the held-out diagnostics are requests too
(``heldout.py``); ``statistics.py`` computes every estimate reported. Summaries are pure
functions of stored predictions.
"""
