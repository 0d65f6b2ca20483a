"""Cold start of the read verbs: a fresh `python -m backend ls` / `probe` vs `import torch`.

Reading the cache never imports torch or transformers (tests/backend/test_no_torch_on_read.py),
so a read verb's cold start is Python + numpy/pandas/duckdb + the command's own work. The
script extracts a small labelled set with a tiny random GPT-2 once, then times `repeat` cold
processes of each command (medians) against a process that only imports torch.

    python benchmarks/cold_start.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_S = 2.0


def cold(argv: list[str], repeat: int) -> float:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def prepare(work: Path) -> tuple[str, str]:
    """A tiny GPT-2 and a labelled set of 40 prompts, extracted into work/cold.duckdb."""
    from transformers import AutoModelForCausalLM

    from tests.conftest import make_config, make_tokenizer

    model_dir = work / "tiny-gpt2"
    AutoModelForCausalLM.from_config(make_config("gpt2")).save_pretrained(model_dir)
    make_tokenizer(bos=True).save_pretrained(model_dir)
    words = ["the cat runs", "the dogs run", "a big dog sits", "the cats are happy"]
    csv = work / "p.csv"
    lines = [f"{words[i % 4]} {' '.join(['cat'] * (i // 4))},{'ab'[i % 2]}\n" for i in range(40)]
    csv.write_text("text,label\n" + "".join(lines))  # 40 distinct prompts
    db = str(work / "cold.duckdb")
    subprocess.run(
        [sys.executable, "-m", "backend", "extract", "--model", str(model_dir), "--prompts",
         str(csv), "--label-column", "label", "--set", "s", "--db", db],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return str(model_dir), db


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="layerscope-cold-"))
    model, db = prepare(work)
    py = [sys.executable]
    rows = {
        "python -c 'import torch'": cold([*py, "-c", "import torch"], args.repeat),
        "python -m backend ls": cold([*py, "-m", "backend", "ls", "--db", db], args.repeat),
        "python -m backend probe (40 prompts, 2 folds, ridge)": cold(
            [
                *py,
                "-m",
                "backend",
                "probe",
                "--model",
                model,
                "--set",
                "s",
                "--db",
                db,
                "--folds",
                "2",
                "--method",
                "ridge",
                "--baseline",
                "none",
            ],
            args.repeat,
        ),
    }
    print(f"cold processes, median of {args.repeat}; target for read verbs <= {TARGET_S} s")
    for name, s in rows.items():
        print(f"  {name:<55} {s:6.2f} s")
    return rows


if __name__ == "__main__":
    main()
