"""The lockstep command line."""
