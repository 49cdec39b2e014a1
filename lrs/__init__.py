"""An xAPI Learning Record Store that derives learner progress in real time."""

__version__ = "0.1.0"
