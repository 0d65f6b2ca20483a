"""`jobs`: the job history kept in the cache."""

from __future__ import annotations

from backend.commands._common import int_in

HELP = "list recent jobs and their status"


def register(p) -> None:
    p.add_argument("--limit", type=int_in(1, 100_000), default=20)


def run(args, store) -> dict:
    df = store.jobs(args.limit)
    return {"jobs": df.to_dict("records")}


def prose(r: dict) -> str:
    return (
        "\n".join(
            f"{j['job_id']}  {j['status']:<11} {j['spec'].get('model')} / {j['spec'].get('set_name')}"
            f"  {j['runs_done']} runs  {j['message'] or ''}"
            for j in r["jobs"]
        )
        or "no jobs"
    )
