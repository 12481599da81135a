"""Hydra's submitit launcher (`hydra/launcher=slurm`) from ddl's side: refused in one paragraph,
before Hydra, where it cannot submit (no submitit, no `sbatch`, no controller); submitit's
warnings said once in ddl's words, not twice per poll; and the sweep's table printed at the end
from its points' run directories, as a sweep run here prints it."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional, Sequence

CHOICES = ("hydra/launcher=slurm", "hydra/launcher=submitit_slurm")
FIX = ("run it on the cluster's login node, or drop hydra/launcher=slurm to run the sweep's "
       "points here, one after another")


def wanted(argv: Sequence[str]) -> bool:
    return any(a.lstrip("+") in CHOICES for a in argv)


def launcher_problem(argv: Sequence[str], which: Callable = shutil.which,
                     run: Callable = subprocess.run) -> str:
    """Why hydra/launcher=slurm cannot submit from here ('' when it can, or is not asked for)."""
    if not wanted(argv):
        return ""
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401, PLC0415
    except ImportError:
        return ("hydra/launcher=slurm uses Hydra's submitit launcher, which is not installed: "
                "pip install -e '.[slurm]' (or pip install 'ddl[slurm]'), then run the sweep again")
    if which("sbatch") is None:
        return f"hydra/launcher=slurm submits each point as a SLURM job, but there is no sbatch on PATH: {FIX}"
    try:
        ping = run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
        said = (ping.stdout + ping.stderr).strip()
        up = ping.returncode == 0 and " UP" in ping.stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        said, up = str(err), False
    if not up:
        return (f"hydra/launcher=slurm: the SLURM controller does not answer (scontrol ping: "
                f"{said or 'no answer'}), so no job could be submitted: {FIX}")
    return ""


class _SaidOnce(logging.Filter):
    """submitit's sacct warning once, in a sentence (it repeats it on every poll of the jobs)."""

    def __init__(self):
        super().__init__()
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if self.said:
            return False
        self.said = True
        record.msg, record.args = ("SLURM's accounting (sacct) does not answer on this cluster, so "
                                   "the jobs' states are read from their files (the line 'Slurm "
                                   "accounting storage is disabled' is sacct's)"), ()
        return True


def quiet_submitit() -> None:
    """submitit's messages through ddl's logging, once each: left to itself it configures two
    handlers of its own (stdout and stderr) that print every warning twice."""
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    logging.getLogger("submitit").addFilter(_SaidOnce())


def points_in(sweep_dir: Path, name_of: Callable[[list], str]) -> list[dict]:
    """The sweep's points as run dicts (sweep_summary.point_run), from their run directories
    (`<n>/.hydra/overrides.yaml`, `<n>/summary.json`; a point without a summary failed)."""
    from ddl.runner.sweep_summary import point_run  # noqa: PLC0415

    points = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        overrides = _overrides(job / ".hydra" / "overrides.yaml")
        points.append(point_run(int(job.name), name_of(overrides), dict(o.split("=", 1) for o in overrides
                                                                       if "=" in o), _summary(job)))
    return points


def _overrides(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [line[2:].strip() for line in lines if line.startswith("- ")]


def _summary(job: Path) -> Optional[dict]:
    try:
        return json.loads((job / "summary.json").read_text())
    except (OSError, ValueError):
        return None
