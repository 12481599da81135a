"""Deliver what a run could not send to MLflow (its `unsent.jsonl`, kept while the store was
unreachable), in the order it was logged:

    python -m ddl.tracking.replay RUN_DIR [--uri URI]

The URI defaults to the one the run used; a password in it was never written down, so give
`--uri` with it, or set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. What is delivered
leaves the file; if the store fails again, the rest stays for the next replay.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from ddl.atomic import write_text_atomic
from ddl.tracking.outbox import SPOOL, read_spool, send, summarize


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddl.tracking.replay",
                                     description="Deliver a run's unsent MLflow entries.")
    parser.add_argument("run_dir", help="the run directory holding unsent.jsonl")
    parser.add_argument("--uri", help="the tracking URI (default: the one the run used)")
    args = parser.parse_args(argv)
    spool = Path(args.run_dir) / SPOOL
    if not spool.is_file():
        print(f"nothing to replay: {spool} does not exist (everything was delivered)")
        return 0
    try:
        head, entries = read_spool(spool)
    except ValueError as err:
        print(f"ddl: error: {err}", file=sys.stderr)
        return 2
    uri = args.uri or re.sub(r"://([^/:@]+):\*\*\*@", "://", head["uri"])   # credentials: env vars
    from ddl.tracking.store import Store  # noqa: PLC0415

    client, done = Store(uri).client(), 0
    try:
        for entry in entries:
            send(client, head["run_id"], entry)
            done += 1
    except Exception as err:  # noqa: BLE001 - keep what is left for the next replay
        import json  # noqa: PLC0415

        left = entries[done:]
        write_text_atomic(spool, "\n".join(json.dumps(x) for x in [head, *left]) + "\n")
        print(f"ddl: error: MLflow at {head['uri']} failed after {done} of {len(entries)} entries "
              f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
              f"{summarize(left)} are still in {spool}", file=sys.stderr)
        return 1
    spool.unlink()
    print(f"delivered to run {head['run_id']} at {head['uri']}: {summarize(entries)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
