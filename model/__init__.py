"""The explicit-state model checker: exploration, properties, counterexamples."""
