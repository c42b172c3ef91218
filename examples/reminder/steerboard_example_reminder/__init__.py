"""A minimal messages method for steerboard (see ``method.py``)."""
