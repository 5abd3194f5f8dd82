"""Example harness plugins: a task (``action``), an upstream backend (``energy``) and a
pretraining recipe (``mam``)."""
