"""Outputs. Each sink is one module behind the small interface in `base.py`."""
