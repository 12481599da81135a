"""ddl from Python, for notebooks: the same overrides as `ddl-train`, a result object back.

    import ddl
    r = ddl.run("experiment=football_l2", "train.epochs=3000")
    r.diagnosis, r.final["dev"]["error"], r.run_dir, r.mlflow_run_id
    r.plot()                                   # the learning curves, inline
    s = ddl.sweep("optimizer=gd,adam", "optimizer.lr=0.001,0.01")
    s.table, s.best, s.parent_run_id

`run` composes the config with Hydra's compose API (a bad override fails at once, in one
paragraph) and trains in this process (ranks=1) or under `mpiexec -n ranks`; `sweep` runs
`ddl-train -m ...` in a child process, its console streamed here, so every point is exactly what
the command line would run (the same parent run, table and artifacts).
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional


class RunFailed(RuntimeError):
    """A run (or a sweep) ended with an error; its message says where the log is."""


@dataclass
class Plot:
    """A matplotlib figure that a notebook shows inline (`_repr_png_`), whatever the backend."""

    figure: Any

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=90)
        return buf.getvalue()

    def save(self, path) -> Path:
        self.figure.savefig(os.fspath(path), dpi=100)
        return Path(path)


@dataclass
class Result:
    """One finished run, read back from its run directory (summary.json and final.npz)."""

    run_dir: Path
    summary: dict
    history: list[dict] = field(repr=False)

    @classmethod
    def from_dir(cls, run_dir) -> "Result":
        from ddl.checkpoint import load_npz  # noqa: PLC0415

        run_dir = Path(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        _, meta = load_npz(run_dir / "final.npz")
        return cls(run_dir, summary, meta.get("history", []))

    @property
    def diagnosis(self) -> str:
        """high bias / high variance / high bias + high variance / ok, judged on `diagnosis_split`."""
        return self.summary["diagnosis"]

    @property
    def diagnosis_split(self) -> str:
        return self.summary.get("diagnosis_split", "dev")

    @property
    def final(self) -> dict:
        """{"train"|"dev"|"test": {"cost", "accuracy", "error"}} of the final model (NaN: no split)."""
        return {k: self.summary[k] for k in ("train", "dev", "test")}

    @property
    def mlflow_run_id(self) -> Optional[str]:
        return self.summary.get("mlflow_run_id")

    @property
    def held_out_error(self) -> Optional[float]:
        """The error of the split the diagnosis was judged on (dev, else test); None without one."""
        split = self.diagnosis_split
        held = self.summary.get(split, {}).get("error") if split in ("dev", "test") else None
        return None if held is None or math.isnan(held) else held

    def describe(self) -> str:
        """The diagnosis in a sentence, with the course's next step (the run's MLflow description)."""
        if "description" in self.summary:
            return self.summary["description"]
        from ddl.diagnosis import explain  # noqa: PLC0415  (a run directory from before 0.x)

        return explain(self.diagnosis, self.diagnosis_split, self.summary["train"]["error"],
                       self.held_out_error)

    def plot(self) -> Plot:
        """The learning curves (cost and error, train and the held-out split), shown inline."""
        from ddl.runner.plots import learning_curves_figure  # noqa: PLC0415

        return Plot(learning_curves_figure(self.history, title=self.diagnosis))

    def __str__(self) -> str:
        from ddl.runner.session import result_line  # noqa: PLC0415

        return f"{self.run_dir}: {result_line(self.summary)}"


@dataclass
class SweepResult:
    """A finished sweep: its points (best held-out error first), failed ones, the parent run, and
    the table it printed (best first, as `ddl-report --parent` shows it)."""

    sweep_dir: Path
    points: list[Result]
    failed: list[Path]
    parent_run_id: Optional[str]
    table: str = field(repr=False)

    @property
    def best(self) -> Optional[Result]:
        return self.points[0] if self.points else None

    def __str__(self) -> str:
        return self.table


def run(*overrides: str, ranks: int = 1, quiet: bool = False) -> Result:
    """Train one run with `ddl-train`'s overrides; returns its Result. ranks > 1 runs it under
    `mpiexec -n ranks` (the same model as one rank). quiet: no console lines."""
    from ddl import cli  # noqa: PLC0415 - Hydra: only when a run is asked for

    cfg, yaml_text = cli.compose(overrides)            # bad overrides fail here, before any work
    resuming = cfg.checkpoint.resume != "never"        # then the directory is the run's own
    run_dir = Path(cfg.out_dir) if resuming else fresh_dir(Path(cfg.out_dir))
    if ranks > 1:
        _stream([_mpiexec(), "-n", str(ranks), sys.executable, "-m", "ddl", *overrides,
                 f"out_dir={run_dir}"], quiet, f"the run in {run_dir}")
        return Result.from_dir(run_dir)
    from ddl.parallel import SerialComm  # noqa: PLC0415
    from ddl.runner.job import execute  # noqa: PLC0415
    from ddl.runner.recorder import Recorder, job_id  # noqa: PLC0415
    from ddl.runner.session import run_name  # noqa: PLC0415

    run_dir.mkdir(parents=True, exist_ok=resuming)
    (run_dir / "config.yaml").write_text(yaml_text)
    cfg.out_dir = str(run_dir)
    cfg.tracking.run_name = cfg.tracking.run_name or run_name(list(overrides), ())
    job = {"op": "run", "cfg": cfg, "run_dir": str(run_dir), "parent": None, "multirun": False,
           "tags": {"ddl.overrides": " ".join(overrides)}, "id": job_id()}
    comm, recorder = SerialComm(), Recorder()   # its tracking worker: closed (delivered) at the end
    try:
        with in_the_kernel(comm, quiet):
            summary = execute(job, comm, recorder)
    except SystemExit as stop:
        if stop.code == 130:           # the kernel's interrupt: stopped at a step, checkpointed
            raise KeyboardInterrupt(f"stopped at a step boundary with a checkpoint in {run_dir}; "
                                    f"continue with ddl.run(..., 'out_dir={run_dir}', "
                                    "'checkpoint.resume=auto')") from None
        raise RunFailed(f"the run failed (exit {stop.code}); the error is above and its traceback "
                        f"in {run_dir / 'train.log'}") from None
    finally:
        recorder.close()
    if summary is None:
        raise RunFailed(f"the run failed; see {run_dir / 'train.log'}")
    return Result.from_dir(run_dir)


@contextmanager
def in_the_kernel(comm, quiet: bool) -> Iterator[None]:
    """A run in the notebook's own process: ddl's console logging for its duration, no stop
    request left from the notebook's last run, and the kernel's signal handlers and logging
    given back afterwards, whatever happened."""
    from ddl.parallel import signals  # noqa: PLC0415
    from ddl.runner.logs import setup_logging  # noqa: PLC0415

    logger = logging.getLogger("ddl")
    kept_log = (list(logger.handlers), logger.level, logger.propagate)
    kept = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    setup_logging(comm, "WARNING" if quiet else "INFO", stream=sys.stdout)
    signals.forget_requests()
    try:
        yield
    finally:
        for s, handler in kept.items():
            signal.signal(s, handler)
        logger.handlers[:], logger.level, logger.propagate = kept_log


def sweep(*overrides: str, ranks: int = 1, quiet: bool = False) -> SweepResult:
    """`ddl-train -m overrides...` (a basic grid `key=a,b`, or hydra/sweeper=lr_search ...), its
    console streamed here; returns the points best first. A failed point does not raise: it is
    in `failed` (the sweep's exit says so); a sweep that could not start raises RunFailed."""
    from ddl import cli  # noqa: PLC0415

    given = [o for o in overrides if o.startswith("hydra.sweep.dir=")]
    sweep_dir = Path(given[-1].split("=", 1)[1]) if given else fresh_dir(
        Path("multirun") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S"))
    cli.compose([_first_value(o) for o in overrides if not o.startswith("hydra.")])  # fail fast
    cmd = [sys.executable, "-m", "ddl", "-m", *overrides]
    if not given:
        cmd.append(f"hydra.sweep.dir={sweep_dir}")
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd]
    code, text = _stream(cmd, quiet, None)
    done = sorted((d for d in sweep_dir.iterdir() if d.name.isdigit()), key=lambda d: int(d.name)) \
        if sweep_dir.is_dir() else []
    points = [Result.from_dir(d) for d in done if (d / "summary.json").is_file()]
    failed = [d for d in done if not (d / "summary.json").is_file()]
    if not points and code != 0:
        raise RunFailed(f"the sweep failed (exit {code}) before any point finished; see above")
    points.sort(key=lambda p: math.inf if p.held_out_error is None else p.held_out_error)
    parent = re.findall(r"sweep parent run (\w+)", text)
    table = re.search(r"sweep results, best first:\n(.*?^best: [^\n]*)", text, re.S | re.M)
    return SweepResult(sweep_dir, points, failed, parent[-1] if parent else None,
                       table.group(1) if table else "")


def fresh_dir(wanted: Path) -> Path:
    """`wanted`, or wanted-<4 hex> when it exists: two runs started in the same second (a notebook
    cell run twice) never share a directory."""
    path = wanted
    while path.exists():
        path = wanted.with_name(f"{wanted.name}-{secrets.token_hex(2)}")
    return path


def _first_value(override: str) -> str:
    """A sweep override's first point, to check the config before the sweep ('a=1,2' -> 'a=1')."""
    key, sep, value = override.partition("=")
    if not sep or key.startswith(("+", "~")) or "(" in value or "[" in value:
        return override
    return f"{key}={value.split(',')[0]}"


def _mpiexec() -> str:
    """The mpich wheel's mpiexec beside this Python (a kernel's PATH may lack the venv's bin)."""
    beside = Path(sys.executable).with_name("mpiexec")
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if not found:
        raise RunFailed("ranks > 1 needs mpiexec (pip install mpich, a dependency of ddl)")
    return found


def _stream(cmd: list[str], quiet: bool, what: Optional[str]) -> tuple[int, str]:
    """Run cmd, its output printed here line by line (a notebook shows it as it comes); (exit
    code, the output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if not quiet:
                print(line, end="", flush=True)
        code = proc.wait()
    except BaseException:                # an interrupted cell: the child stops at its step boundary
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    if code != 0 and what is not None:
        raise RunFailed(f"{what} failed (exit {code}); its error is above")
    return code, "".join(lines)
