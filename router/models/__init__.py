"""Model adapters. Each implements ``router.protocols.Model``."""
