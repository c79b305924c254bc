"""The web demo: base and fine-tuned side by side, on free questions and on held-out questions
of the run's evaluation split, with the run's results (``gemma-pipeline demo``)."""
