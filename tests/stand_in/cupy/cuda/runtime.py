"""The stand-in's CUDA runtime: DDL_STAND_IN_GPUS devices (default 1)."""
import os


def getDeviceCount() -> int:  # noqa: N802 - CuPy's name
    return int(os.environ.get("DDL_STAND_IN_GPUS", "1"))
