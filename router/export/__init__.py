"""Exports of the event log for auditors."""
