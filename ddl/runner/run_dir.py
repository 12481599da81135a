"""The run directory: whether one can be made where the command line says, made with its
config, refused when it holds another run, and what a launch refused before any training leaves
(a REFUSED mark, so the corrected command may take the directory; ddl never writes over a run)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from ddl.atomic import write_text_atomic
from ddl.config import redact

TRAINED = ("summary.json", "final.npz", "checkpoints")       # what a run that trained leaves
RUN_FILES = ("summary.json", "final.npz", "train.log", "config.yaml", "checkpoints")
REFUSED = "REFUSED"          # a launch refused before any training: the next run may take its directory


def out_dir_problem(argv: Sequence[str]) -> str:
    """Where the run directories go cannot hold them (Hydra would make them first, with a
    traceback): the out_dir (or hydra.run.dir / hydra.sweep.dir) given on the command line, else
    runs/ or multirun/ in the working directory. It, or a folder above it, is a file; or no folder
    can be made in the nearest one that exists (read-only, no permission, /proc); or its disk is
    (nearly) full. '' when fine."""
    from ddl.tracking.link import NO_RUN  # noqa: PLC0415 - the trainer's import loads no tracking

    if any(a.split("=", 1)[0] in NO_RUN for a in argv):
        return ""                 # nothing will be made
    given = {k.lstrip("+"): v for k, sep, v in (a.partition("=") for a in argv) if sep and v}
    sweep = any(a in ("-m", "--multirun") for a in argv)
    for key in ("hydra.sweep.dir",) if sweep else ("out_dir", "hydra.run.dir"):
        if key in given:
            break
    else:
        key = None
    path = Path(given[key]).expanduser() if key else Path("multirun" if sweep else "runs")
    shown = f"{key}={given[key]}" if key else f"the run directory ({path.resolve()})"
    blocker = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not blocker.is_dir():
        return f"{shown}: {blocker} is a file, so it cannot hold a run directory; give another out_dir"
    try:                          # the test that settles it, for root too: make a folder there
        os.rmdir(tempfile.mkdtemp(prefix=".ddl-probe-", dir=blocker))
    except OSError as err:
        return (f"{shown}: no folder can be made in {blocker.resolve()} ({err.strerror or err}); run "
                "from a folder you can write, or give out_dir (hydra.sweep.dir for a sweep) there")
    free = disk_free(blocker)
    if free is not None and free < MIN_FREE:
        return (f"{shown}: the disk holding {blocker.resolve()} has {free >> 10} KiB free, and a run "
                f"needs {MIN_FREE >> 20} MiB to start (its config and log; checkpoints and the model "
                "need more); free some space there, or give out_dir on another disk")
    return ""


MIN_FREE = 1 << 20      # below this, even the run's config and log may not fit: refused before Hydra


def disk_free(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the disk holding `path` (None: unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def remove_hydras_leftovers(run_dir: Path) -> None:
    """A refused run leaves nothing: Hydra made run_dir (and its .hydra/) before ddl saw the
    config; remove them, and the date folder if that left it empty."""
    import shutil  # noqa: PLC0415

    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir)
        for parent in (run_dir.parent, run_dir.parent.parent):
            try:
                parent.rmdir()            # only if empty
            except OSError:
                break


def hide_passwords_in(hydra_dir: Path) -> None:
    """Hydra's own copies of the config and overrides, with any URI password redacted."""
    for path in hydra_dir.glob("*.yaml"):
        text = path.read_text()
        if redact(text) != text:
            write_text_atomic(path, redact(text))


def another_run(run_dir: Path) -> list[str]:
    """The files of a run already in run_dir (Hydra's own .hydra/ does not count, nor what a
    launch refused before any training left: its config.yaml and train.log, marked REFUSED)."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if (run_dir / REFUSED).exists():
        found = [name for name in found if name not in ("train.log", "config.yaml")]
    return found


def make_run_dir(run_dir: Path, resume: str, config_yaml: str, hydra_dir: Optional[Path]) -> None:
    """The run directory with its resolved config.yaml (a password in it redacted, and in Hydra's
    own copies in `hydra_dir`); refused (exit 1) when it holds another run or cannot be made."""
    taken = another_run(run_dir) if resume == "never" else []
    if taken:
        print(f"ddl: error: {run_dir} already holds another run ({', '.join(taken)}); ddl never "
              "writes over a run. Give a new out_dir (or hydra.sweep.dir), or continue that run "
              "with checkpoint.resume=auto.", file=sys.stderr, flush=True)
        raise SystemExit(1)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / REFUSED).unlink(missing_ok=True)   # this run takes a refused launch's directory
        write_text_atomic(run_dir / "config.yaml", redact(config_yaml))
    except OSError as err:               # out_dir is a file, or a place this user cannot write
        print(f"ddl: error: cannot use {run_dir} as the run directory (out_dir): "
              f"{err.strerror or err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if hydra_dir is not None:
        hide_passwords_in(hydra_dir)


def earlier_point(run_dir: Path, config_yaml: str) -> tuple[str, Optional[dict]]:
    """What a sweep resumed in its directory (`hydra.sweep.dir` of an earlier sweep) finds of one
    of its points: ("", None) nothing, a fresh point; ("finished", its summary) a point that
    finished: not trained again; ("unfinished", None) a point that started: it resumes from its
    newest checkpoint (or starts again, when it has none). A directory whose config differs from
    this point's is another sweep's: a ValueError (ddl never writes over a run)."""
    if not another_run(run_dir):
        return "", None
    import json  # noqa: PLC0415

    before = run_dir / "config.yaml"
    changed = _changed(before.read_text(), redact(config_yaml)) if before.is_file() else ""
    if changed:
        raise ValueError(f"{run_dir} holds a point of another sweep ({changed}): a sweep resumes in "
                         "its own directory with the same grid and settings; give a new hydra.sweep.dir "
                         "for a new sweep")
    try:
        return "finished", json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "unfinished", None


PER_INVOCATION = ("out_dir", "checkpoint.resume")   # settings a resumed sweep may see change


def _changed(old: str, new: str) -> str:
    """The first setting two run configs differ in, as 'key: old -> new' ('' when none does but
    the invocation's own: its default out_dir, checkpoint.resume)."""
    import yaml  # noqa: PLC0415

    a, b = _flat(yaml.safe_load(old) or {}), _flat(yaml.safe_load(new) or {})
    for key in sorted(set(a) | set(b)):
        if key not in PER_INVOCATION and a.get(key) != b.get(key):
            return f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
    return ""


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def mark_refused(run_dir: Path, err: BaseException) -> None:
    """REFUSED beside what the refused launch left (config.yaml, train.log): the corrected command
    may take the directory (ddl never writes over a run that trained)."""
    if any((run_dir / name).exists() for name in TRAINED):
        return                         # a run that trained (a resume refused): its directory stays its own
    try:
        write_text_atomic(run_dir / REFUSED, f"refused before any training: {type(err).__name__}: "
                          f"{redact(str(err))}\nA new run may take this directory.\n")
    except OSError:
        pass
