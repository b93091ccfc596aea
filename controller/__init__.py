"""Fan out batches of containerized commands as Cloud Run job executions, and report on every one."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["CloudRunJob", "CloudRunJobResult", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``import controller.<module>`` stays as light as that module.
    if name in ("CloudRunJob", "CloudRunJobResult"):
        from controller import cloudrunjob

        return getattr(cloudrunjob, name)
    raise AttributeError(f"module 'controller' has no attribute {name!r}")
