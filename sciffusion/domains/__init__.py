"""Layer 5, domains: climate, medical and finance I/O, metrics and tasks. Importing this registers every task."""

from . import climate  # noqa: F401  (registers forecast)
from ..tasks import TASKS

__all__ = ["TASKS", "climate"]
