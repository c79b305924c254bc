"""Scoring primitives (log-likelihoods over a shared prompt) and metrics over their results."""
