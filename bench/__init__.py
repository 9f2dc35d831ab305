"""router's bench suite: ``python -m bench [--quick] [--only NAME] [--json FILE]``."""
