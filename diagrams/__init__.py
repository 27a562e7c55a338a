"""Rendering of role machines, the KV lifecycle, counterexample swimlanes; the committed gallery."""
