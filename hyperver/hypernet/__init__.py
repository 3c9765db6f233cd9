"""Hypernetwork per-user verifiers: tiny f, generator h_gen, training, enrollment and verification."""
