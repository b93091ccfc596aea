"""A local Cloud Run Admin API v2 (+ Cloud Logging ``entries:list``) that runs tasks as local processes.

See docs/emulator.md.
"""

from cloudrun_emulator.faults import Faults, MethodFaults
from cloudrun_emulator.records import JobSeed
from cloudrun_emulator.server import Emulator
from cloudrun_emulator.sources import JobSource

__all__ = ["Emulator", "Faults", "JobSeed", "JobSource", "MethodFaults"]
