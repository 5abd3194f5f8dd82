"""Example harness plugins: a task (``action``), an upstream backend (``energy``), an
analysis (``norms``) and a pretraining recipe (``mam``)."""
