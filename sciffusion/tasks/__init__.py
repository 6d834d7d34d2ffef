"""Layer 4, tasks built from the engine, the U-Net and the training path. Importing a task module registers it."""

from . import generate  # noqa: F401  (registers the task)
from .base import TASKS, Flag, Task, register, run_training

__all__ = ["TASKS", "Flag", "Task", "register", "run_training"]
