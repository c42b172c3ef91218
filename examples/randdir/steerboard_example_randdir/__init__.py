"""A minimal activation-hook method for steerboard (see ``method.py``)."""
