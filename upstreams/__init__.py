"""Upstream plugins (imported as ``harness.upstreams``); each module is one backend family."""
