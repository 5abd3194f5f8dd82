"""harness: every layer of a speech model, ranked per task.

The data path is: audio -> upstream (all layers) -> optional feature cache ->
probe (one layer or a weighted sum) -> metric -> result record -> report.
"""

__version__ = "0.1.0"
