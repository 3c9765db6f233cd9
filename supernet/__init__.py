"""Once-for-All style elastic SuperNet, latency LUTs and architecture search.

Face-agnostic by design: evaluators and losses are passed in by the caller (``hyperver``).
"""
__version__ = "0.1.0"
