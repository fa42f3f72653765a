"""Times the large-output commands in interleaved rounds (see run.sh) and prints medians
and ratios. Arguments: WORK GEN RUNS RESULT ORCH [ORCH_B]."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

work, gen, runs, result, orch, orch_b = sys.argv[1:7]
cmds = [
    ("bare", gen),
    ("no-cache", f"'{orch}' build --no-cache -q"),
    ("cache", f"'{orch}' build -q"),
]
if orch_b:
    cmds.append(("cache-B", f"'{orch_b}' build -q"))

times = {name: [] for name, _ in cmds}
seed = 0
for r in range(int(runs)):
    k = r % len(cmds)
    for name, cmd in cmds[k:] + cmds[:k]:
        # A new seed (a new key, new content) and an empty store before every run, and
        # the last run's dirty pages written back so none of that is charged to this one.
        seed += 1
        with open(os.path.join(work, "seed"), "w") as f:
            f.write(f"{seed}\n")
        shutil.rmtree(os.path.join(work, ".orch", "cache"), ignore_errors=True)
        out = os.path.join(work, "out.bin")
        if os.path.exists(out):
            os.remove(out)
        os.sync()
        t = time.perf_counter()
        subprocess.run(["sh", "-c", cmd], cwd=work, check=True)
        times[name].append(time.perf_counter() - t)
    print(f"round {r + 1}: " + "  ".join(f"{n} {times[n][-1]:.3f}s" for n, _ in cmds), flush=True)

if result:
    with open(result, "w") as f:
        json.dump(times, f, indent=1)

med = {n: statistics.median(v) for n, v in times.items()}
print()
print(f"{'':10} {'median s':>9} {'min s':>7} {'max s':>7} {'/ bare':>7} {'/ no-cache':>10}")
for n, m in med.items():
    print(
        f"{n:10} {m:9.3f} {min(times[n]):7.3f} {max(times[n]):7.3f} "
        f"{m / med['bare']:7.2f} {m / med['no-cache']:10.2f}"
    )
