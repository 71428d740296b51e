"""Specs and helpers of the run, conductor and status tests."""
