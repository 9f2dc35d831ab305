"""Observers: adapters that see each batch of events once it is committed."""
