"""How many CPU threads should training use? Measures ms/step for 1 and 2 threads, with the
other core idle and with it busy (a competing process spinning), in one run.

    python bench/bench_threads.py [--steps 30]

This is the measurement behind lgdram's default of one thread (`--threads`, LGDRAM_THREADS).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import time


def spin(stop: float) -> None:
    x = 0
    while time.time() < stop:
        x += 1


def measure(threads: int, mc: int, steps: int) -> float:
    cmd = [sys.executable, "-m", "lgdram_cli", "bench", "train", "--set", "model.core=rnn",
           "--set", "dataset.digits=mnist-mini", "--mc", str(mc), "--steps", str(steps),
           "--threads", str(threads), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["ms_per_step"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    results = {}
    for busy in (False, True):
        for mc in (1, 10):
            for threads in (1, 2):
                spinner = None
                if busy:
                    spinner = mp.Process(target=spin, args=(time.time() + 600,))
                    spinner.start()
                try:
                    ms = measure(threads, mc, args.steps)
                finally:
                    if spinner is not None:
                        spinner.terminate()
                        spinner.join()
                results[f"{'busy' if busy else 'idle'}_mc{mc}_threads{threads}_ms"] = round(ms, 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
