"""A minimal weight-edit method for steerboard (see ``method.py``)."""
