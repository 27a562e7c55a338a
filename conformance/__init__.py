"""Trace schema, trace conformance against the specs, Flight Recorder import."""
