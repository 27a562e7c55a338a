"""The shipped protocol specs; see registry.py."""
