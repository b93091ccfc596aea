"""Local Cloud Run Admin API v2 (+ Cloud Logging ``entries:list``) that runs tasks as local processes.

See docs/emulator.md.
"""

from controller.emulator.faults import Faults, MethodFaults
from controller.emulator.server import Emulator

__all__ = ["Emulator", "Faults", "MethodFaults"]
