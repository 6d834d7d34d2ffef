"""Layer 4, tasks built from the engine, the U-Net and the training path. Importing a task module registers it."""

from . import generate  # noqa: F401  (registers the task)
from .base import COMMANDS, TASKS, Command, Flag, Task, register, register_command, run_training

__all__ = ["COMMANDS", "TASKS", "Command", "Flag", "Task", "register", "register_command", "run_training"]
