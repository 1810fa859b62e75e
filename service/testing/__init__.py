"""Test and benchmark support, never used by the running service."""
