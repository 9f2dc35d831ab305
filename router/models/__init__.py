"""Model adapters. Each implements ``router.core.protocols.Model``."""
