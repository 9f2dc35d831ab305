"""Memory: what of a run's conversation goes into each model call (``context``, pure)."""

from .context import ContextPolicy, Request, Window, fit

__all__ = ["ContextPolicy", "Request", "Window", "fit"]
