"""Server-side one-shot enrollment and per-user model delivery (built on ``hyperver``)."""
__version__ = "0.1.0"
