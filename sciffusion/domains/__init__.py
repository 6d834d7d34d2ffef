"""Layer 5, domains: climate, medical and finance I/O, metrics and tasks. Importing this registers every task."""

from ..tasks import COMMANDS, TASKS
from . import climate, finance, medical  # noqa: F401  (importing registers their tasks)

__all__ = ["COMMANDS", "TASKS", "climate", "finance", "medical"]
