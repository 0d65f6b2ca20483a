"""Peak memory of the extract job: do states stream to the store, or does something hold them?

    python benchmarks/memory.py                      # GPT-2-small shape, 100k tokens
    python benchmarks/memory.py --tokens 20000,60000 # several sizes: the peak should stay flat

Each measurement runs in its own process (``os.wait4`` gives that child's peak RSS, and the
parent samples ``/proc/<pid>/status`` every 0.2 s for the timeline):

- ``model``: imports + ``models.get_model`` of the GPT-2-small-shape model (random weights,
  the real config and vocabulary; built by ``benchmarks/views.py``'s ``make_model``) and one
  forward batch — what any job holds before it stores anything;
- ``extract N``: the real extract job (``Worker.run`` of a ``JobSpec``) of a random-word set
  of about N tokens into a fresh DuckDB file.

Target: peak(extract) ≤ RSS of the loaded model + 1.5 GB, whatever N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 1 << 30


def child(kind: str, model_dir: str, db: str, n_tokens: int) -> None:
    import torch

    from backend import models
    from benchmarks.views import bpe_vocab, prompt_set

    t = time.perf_counter()
    if kind == "model":
        lm = models.get_model(model_dir)
        loaded = rss_of(os.getpid())
        with torch.inference_mode():
            lm.base(input_ids=torch.randint(300, 5000, (16, 512)))
        out = {"seconds": time.perf_counter() - t, "loaded": loaded}
    else:
        from backend.jobs.base import JobSpec
        from backend.jobs.worker import Worker
        from backend.store import Store

        with Store(db) as s:
            if os.environ.get("MEM_DUCKDB_LIMIT"):  # diagnosis: cap DuckDB's buffer pool
                s.con.execute(f"SET memory_limit = '{os.environ['MEM_DUCKDB_LIMIT']}'")
            s.save_prompt_set("mem", prompt_set(n_tokens, bpe_vocab("gpt2")[2]))
            p = Worker(s).run(JobSpec(model=model_dir, set_name="mem"))
            out = {"seconds": time.perf_counter() - t, "tokens": p.result.get("tokens")}
            out["status"] = p.status
        out["db_bytes"] = Path(db).stat().st_size
    print(json.dumps(out), flush=True)


def rss_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure(kind: str, model_dir: Path, work: Path, n_tokens: int = 0) -> dict:
    """Run one child; -> its JSON line plus peak RSS (wait4) and an RSS timeline."""
    db = work / f"mem-{kind}-{n_tokens}.duckdb"
    db.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", kind, str(model_dir), str(db), str(n_tokens)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    timeline: list[tuple[float, int]] = []
    t0 = time.perf_counter()

    def sample() -> None:
        while p.poll() is None:
            r = rss_of(p.pid)
            if r:
                timeline.append((time.perf_counter() - t0, r))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = status
    th.join()
    db.unlink(missing_ok=True)
    res = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": status}
    res.update(kind=kind, n_tokens=n_tokens, peak=usage.ru_maxrss * 1024, timeline=timeline)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", default="100000", help="comma list of set sizes")
    ap.add_argument("--work", default=None, help="where the model is built (kept)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, model_dir, db, n = a.child
        child(kind, model_dir, db, int(n))
        return
    from benchmarks.views import make_model

    work = Path(a.work or tempfile.mkdtemp(prefix="layerscope-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = make_model("gpt2", work / "gpt2")
    print(f"# load average {os.getloadavg()}")
    base = measure("model", model_dir, work)
    print(
        f"model: {base['loaded'] / GB:.2f} GB once loaded (imports + weights), peak "
        f"{base['peak'] / GB:.2f} GB with one forward of 16 x 512 tokens"
    )
    for n in (int(v) for v in a.tokens.split(",")):
        r = measure("extract", model_dir, work, n)
        over = (r["peak"] - base["loaded"]) / GB
        ok = "met" if over <= 1.5 else "missed"
        print(
            f"extract {r.get('tokens') or 0:,} tokens: peak {r['peak'] / GB:.2f} GB = loaded model "
            f"+ {over:.2f} GB (target ≤ +1.5 GB: {ok}); {r.get('seconds', 0):.0f} s; "
            f"DuckDB file {r.get('db_bytes', 0) / GB:.2f} GB"
        )
        tl = r["timeline"]
        marks = [tl[int(i * (len(tl) - 1) / 9)] for i in range(10)] if tl else []
        print("  RSS over time: " + ", ".join(f"{t:.0f}s {b / GB:.2f}" for t, b in marks))
    print(f"# load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
