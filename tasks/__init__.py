"""Task plugins (imported as ``harness.tasks``); each module registers one task."""
