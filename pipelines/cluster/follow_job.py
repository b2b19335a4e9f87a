"""Follow a submitted Ray job: its own output as it runs, then its status as the exit status.

``scripts/run_default.sh`` submits the job with ``ray job submit --no-wait`` (its
packaging, "next steps" and status lines go to a file) and follows it with
``python -m pipelines.cluster.follow_job --address URL JOB_ID``: the job's log as the job
wrote it, without the address and status lines that ``ray job submit`` and
``ray job logs --follow`` print around it. Exit status 0 when the job succeeded, else 1
with one line naming the job, its status and Ray's message (the job's own error is in
its log above); an interrupt leaves the job running and says how to stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any, TextIO

SUCCEEDED = "SUCCEEDED"


def follow(client: Any, job_id: str, out: TextIO) -> tuple[str, str]:
    """Write the job's log to ``out`` until the job ends; return its status and message.

    Args:
        client: a ``ray.job_submission.JobSubmissionClient`` (``tail_job_logs``,
            ``get_job_info``).
        job_id: the submission id.
        out: where the log goes (flushed after every chunk).

    Returns:
        The job's final status (``SUCCEEDED``, ``FAILED``, ``STOPPED``) and Ray's message,
        on one line without the copy of the log's end that Ray appends to a failure's.

    Raises:
        RuntimeError: no such job (before any output), or the tail broke off.
    """
    client.get_job_info(job_id)  # an unknown job: Ray's one-line error, not a traceback

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    info = client.get_job_info(job_id)
    status = getattr(info.status, "value", info.status)
    message = str(info.message or "").split(", last available logs", 1)[0]
    return str(status), " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Follow ``JOB_ID`` at ``--address``; 0 when it succeeded, else 1 (130 on an interrupt)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.cluster.follow_job")
    parser.add_argument("--address", required=True, help="the Ray dashboard (job server) URL")
    parser.add_argument("job_id", help="the submission id given to ray job submit")
    args = parser.parse_args(argv)
    from ray.job_submission import JobSubmissionClient

    # The client's own INFO line (its websocket closing) stays out of the job's output.
    logging.getLogger(JobSubmissionClient.__module__).setLevel(logging.WARNING)
    try:
        status, message = follow(JobSubmissionClient(args.address), args.job_id, sys.stdout)
    except KeyboardInterrupt:
        print(f"interrupted; the job goes on (ray job stop {args.job_id})", file=sys.stderr)
        return 130
    except (ConnectionError, RuntimeError) as err:  # no server, no such job, a dropped tail
        print(f"error: job {args.job_id}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    if status != SUCCEEDED:
        print(f"job {args.job_id} {status.lower()}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
