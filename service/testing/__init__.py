"""Test and benchmark support: shared by tests/ and bench/, never used by the running service."""
