"""steerboard: how much safety does a steering or editing method buy, and what does it cost?

The distribution installs the top-level folders ``tasks/``, ``methods/``, ``scorers/`` and
``leaderboard/`` as ``steerboard.tasks``, ``steerboard.methods``, ``steerboard.scorers`` and
``steerboard.leaderboard``. Importing this package has no side effects.
"""

__version__ = "0.1.0"
