"""Layer 5, domains: climate, medical and finance I/O, metrics and tasks. Importing this registers every task."""

from ..tasks import TASKS
from . import climate, finance, medical  # noqa: F401  (importing registers their tasks)

__all__ = ["TASKS", "climate", "finance", "medical"]
