"""Example harness plugins: a task (``action``) and an upstream backend (``energy``)."""
