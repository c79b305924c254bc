"""Tables and plots from the run's metrics."""
