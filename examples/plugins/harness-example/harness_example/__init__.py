"""Example harness plugins: a task (``action``), an upstream backend (``energy``) and an analysis (``norms``)."""
