"""Protocol specs: the c10d fabric, the envelope contract, and the shipped protocols."""
