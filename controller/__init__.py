"""Fan out batches of containerized commands as Cloud Run job executions, and report on every one."""

__version__ = "0.1.0"
