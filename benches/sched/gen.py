#!/usr/bin/env python3
"""Writes a layered graph of `sleep` phases for orch, ninja and make, and its bounds.

Usage: gen.py DIR [LAYERS] [WIDTH] [JOBS]

Phase `pK_W` (layer K, column W) sleeps SHORT seconds and needs `p(K-1)_W` and
`p(K-1)_V` with V = (W + 1) % WIDTH, so every layer waits on the one above. A few
phases deep in the graph sleep LONG seconds instead: those of the last column
(declared last in each layer, as a file order sees them) in the last LONG_COUNT
layers, one chain that is the critical path.

Writes DIR/orch/Orchfile.toml, DIR/ninja/build.ninja, DIR/make/Makefile (each
building stamp files under out/), and prints one JSON object: the phase count, the
total work, the critical path, the lower bound max(critical path, work / jobs), and
the wall times a list scheduler would reach at -j JOBS starting ready phases in file
order and by longest remaining path, with no process overhead.
"""

import json
import os
import sys

SHORT = 0.1
LONG = 2.0
LONG_COUNT = 3


def graph(layers, width):
    """(name, seconds, [needs]) in file order: layer by layer, column by column."""
    phases = []
    for k in range(layers):
        for w in range(width):
            deep = k >= layers - LONG_COUNT and w == width - 1
            needs = [] if k == 0 else sorted({f"p{k-1}_{w}", f"p{k-1}_{(w + 1) % width}"})
            phases.append((f"p{k}_{w}", LONG if deep else SHORT, needs))
    return phases


def critical(phases):
    """Longest remaining path (own duration included) of every phase."""
    below = {}
    down = {name: [] for name, _, _ in phases}
    for name, _, needs in phases:
        for n in needs:
            down[n].append(name)
    for name, secs, _ in reversed(phases):
        below[name] = secs + max((below[d] for d in down[name]), default=0.0)
    return below


def simulate(phases, jobs, key):
    """Wall time of a list schedule that starts ready phases in `key` order."""
    secs = {n: s for n, s, _ in phases}
    waiting = {n: len(needs) for n, _, needs in phases}
    down = {n: [] for n, _, _ in phases}
    for n, _, needs in phases:
        for u in needs:
            down[u].append(n)
    ready = [n for n, _, needs in phases if not needs]
    running = []  # (end, name)
    now = 0.0
    while ready or running:
        ready.sort(key=key)
        while ready and len(running) < jobs:
            n = ready.pop(0)
            running.append((now + secs[n], n))
        running.sort()
        now, n = running.pop(0)
        for d in down[n]:
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    return now


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    width = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    jobs = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    if layers < LONG_COUNT or width < LONG_COUNT:
        sys.exit(f"gen.py: LAYERS and WIDTH must be at least {LONG_COUNT}")
    phases = graph(layers, width)

    os.makedirs(f"{out}/orch", exist_ok=True)
    with open(f"{out}/orch/Orchfile.toml", "w") as f:
        f.write("[orch]\nformat = 1\n")
        for name, secs, needs in phases:
            f.write(f"\n[phase.{name}]\n")
            if needs:
                f.write(f"needs = {json.dumps(needs)}\n")
            f.write(f'run = "sleep {secs} && touch {{output}}"\n')
            f.write(f'outputs = ["out/{name}"]\n')

    os.makedirs(f"{out}/ninja", exist_ok=True)
    with open(f"{out}/ninja/build.ninja", "w") as f:
        f.write("rule run\n  command = mkdir -p out && sleep $secs && touch $out\n\n")
        for name, secs, needs in phases:
            deps = " ".join(f"out/{n}" for n in needs)
            f.write(f"build out/{name}: run{' | ' + deps if deps else ''}\n  secs = {secs}\n")

    os.makedirs(f"{out}/make", exist_ok=True)
    with open(f"{out}/make/Makefile", "w") as f:
        f.write("all: " + " ".join(f"out/{n}" for n, _, _ in phases) + "\n\n")
        for name, secs, needs in phases:
            deps = " ".join(f"out/{n}" for n in needs)
            f.write(f"out/{name}: {deps}\n\tmkdir -p out && sleep {secs} && touch $@\n\n")

    order = {n: i for i, (n, _, _) in enumerate(phases)}
    below = critical(phases)
    work = sum(s for _, s, _ in phases)
    path = max(below.values())
    print(json.dumps({
        "phases": len(phases),
        "jobs": jobs,
        "work_s": round(work, 3),
        "critical_path_s": round(path, 3),
        "lower_bound_s": round(max(path, work / jobs), 3),
        "file_order_s": round(simulate(phases, jobs, lambda n: order[n]), 3),
        "longest_path_s": round(simulate(phases, jobs, lambda n: (-below[n], order[n])), 3),
    }))


if __name__ == "__main__":
    main()
