"""Fault injection for the tests: things that break the path between two real processes."""
