"""The trace formats lockstep writes and reads, shared by the implementation (impl/, which records) and
conformance (conformance/, which checks): the JSONL event schema (``schema``) and the plain-data
unpickler every Flight Recorder dump is read through (``plain``).  Pure Python, no torch."""
