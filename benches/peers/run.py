#!/usr/bin/env python3
"""Peer benchmark: orch against ninja, GNU make, Snakemake and doit on one generated
workload, timed side by side, written up as docs/benchmarks.md.

For each (shape, N) it writes one copy of the project per tool (benches/peers/workload.py),
builds each once (the probe: a tool whose run exceeds the time limit is skipped at this
size and every larger one of the shape), checks every tool wrote the same outputs, then
times three scenarios, tools interleaved within every round (A B C A B C ...):

  cold      outputs and the tool's state removed, then a build at -j JOBS
  noop      nothing changed (the first no-op after a cold build is kept apart)
  changed   the middle phase's source gets new content (a new one every round)

plus the floors, run in the same rounds by benches/peers/floors.c: `stat` (lstat every
file of the project once) beside no-op and `spawn` (N /bin/true, JOBS at a time) beside
cold. Every build is started by floors.c's launcher, which takes the wall time
(CLOCK_MONOTONIC around posix_spawn and wait4) and the peak RSS (wait4's ru_maxrss: the
largest process among the tool and those it waited for).

Results are merged into a JSON file (a (shape, N) cell measured now replaces that cell
whole, so every ratio compares tools measured in the same rounds) and the report and its
charts are rendered from it. Only python3, cc, the tools and a virtual environment this
script creates (Snakemake and doit, pinned) are needed.
"""

import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# No __pycache__ beside the sources: nothing to ignore in git.
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)

import report  # noqa: E402
import workload  # noqa: E402

TOOLS = ("orch", "ninja", "make", "snakemake", "doit")
SIZES = (1000, 10000, 100000)
# Versions that install on CPython 3.11; bump together with the report.
PINS = {"snakemake": "snakemake==9.27.1", "doit": "doit==0.37.0"}
SCENARIOS = ("cold", "noop", "changed")


def log(msg):
    sys.stderr.write("[peers %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class Skip(Exception):
    """A tool leaves the cell: the reason goes into the report."""


class Fail(Exception):
    """A tool failed or disagreed: reported as a failure, not a skip."""


# --- tools ---------------------------------------------------------------------------


def apt_install(package):
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("peers: %s is missing; install it (apt-get install %s)" % (package, package))
    log("installing %s with apt-get" % package)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env=env)


def ensure_venv(venv):
    """Creates the virtual environment with the pinned Snakemake and doit, once."""
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "pins.txt")
    want = "\n".join(sorted(PINS.values())) + "\n"
    try:
        with open(stamp, encoding="utf-8") as f:
            if f.read() == want:
                return
    except OSError:
        pass
    log("creating %s with %s" % (venv, ", ".join(sorted(PINS.values()))))
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q"] + sorted(PINS.values()), check=True)
    with open(stamp, "w", encoding="utf-8") as f:
        f.write(want)


class Tool:
    """How to build, reset and name one tool."""

    def __init__(self, name, argv, state, version_argv):
        self.name = name
        self.argv = argv
        self.state = state
        self.version_argv = version_argv

    def version(self):
        try:
            out = subprocess.run(self.version_argv, capture_output=True, text=True,
                                 timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            return "unknown (%s)" % e
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        return lines[0] if lines else "unknown"


def make_tools(args):
    j = str(args.jobs)
    venv_bin = os.path.join(args.venv, "bin")
    return {
        "orch": Tool("orch", [args.orch, "build", "-q", "-j", j], [".orch"],
                     [args.orch, "--version"]),
        "ninja": Tool("ninja", ["ninja", "-j", j], [".ninja_log", ".ninja_deps"],
                      ["ninja", "--version"]),
        "make": Tool("make", ["make", "-j", j], [], ["make", "--version"]),
        "snakemake": Tool("snakemake",
                          [os.path.join(venv_bin, "snakemake"), "--cores", j, "--quiet"],
                          [".snakemake"], [os.path.join(venv_bin, "snakemake"), "--version"]),
        "doit": Tool("doit", [os.path.join(venv_bin, "doit"), "run", "-n", j],
                     [".doit.db*"], [os.path.join(venv_bin, "doit"), "--version"]),
    }


def prepare_tools(args):
    if "ninja" in args.tools and not shutil.which("ninja"):
        apt_install("ninja-build")
    if "make" in args.tools and not shutil.which("make"):
        apt_install("make")
    if not shutil.which("cksum"):
        sys.exit("peers: cksum (coreutils) is required")
    if "orch" in args.tools and not os.access(args.orch, os.X_OK):
        sys.exit("peers: no orch binary at %s; run `cargo build --release` or pass --orch"
                 % args.orch)
    if {"snakemake", "doit"} & set(args.tools):
        ensure_venv(args.venv)


def build_helper(work):
    """Compiles floors.c: the launcher that times every build, and the floors."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        sys.exit("peers: a C compiler (cc) is required for benches/peers/floors.c")
    exe = os.path.join(work, "floors")
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "floors.c")], check=True)
    return exe


# --- timing ----------------------------------------------------------------------------


def timed(helper, argv, cwd, log_path, timeout):
    """Runs argv in cwd under the launcher; returns (seconds, peak RSS in KiB, exit code)
    or raises TimeoutError after killing its process group."""
    result = log_path + ".time"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([helper, "run", result] + argv, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError("> %d s" % timeout)
    try:
        with open(result, encoding="utf-8") as f:
            seconds, rss = f.read().split()
        os.unlink(result)
    except (OSError, ValueError):
        raise RuntimeError("the launcher wrote no timing for %s; log tail:\n%s"
                           % (argv[0], tail(log_path)))
    return float(seconds), int(rss), code


def tail(path, lines=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# --- one (shape, N) cell ---------------------------------------------------------------


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def reset(tool, root, shape):
    """Back to a fresh checkout: no outputs, no tool state (orch's cache included)."""
    remove(os.path.join(root, "out"))
    for pattern in tool.state:
        for path in glob.glob(os.path.join(root, pattern)):
            remove(path)
    for d in workload.output_dirs(shape):
        os.makedirs(os.path.join(root, d), exist_ok=True)


def outputs_digest(root, shape, n):
    """One digest over every expected output (path and bytes), or a Fail naming the
    first missing one."""
    h = hashlib.blake2b(digest_size=16)
    for i in range(n):
        rel = workload.output_path(shape, i)
        try:
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read()
        except OSError:
            raise Fail("output %s missing after the build" % rel)
        h.update(rel.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def newest_output(root, shape, n):
    return max(os.stat(os.path.join(root, workload.output_path(shape, i))).st_mtime_ns
               for i in range(n))


REFERENCES = ("orch", "ninja")


def limit(args, name):
    """How long one run of `name` may take: orch and ninja are what every ratio is about,
    so they get `--reference-timeout`; the peers get `--timeout`."""
    return args.reference_timeout if name in REFERENCES else args.timeout


def measure_cell(args, tools, helper, shape, n, carried_skips, previous_cold):
    """Measures every tool on (shape, n); returns the cell for the results file."""
    cell = {"shape": shape, "n": n, "seed": args.seed, "jobs": args.jobs,
            "rounds": args.rounds, "cold_rounds": args.cold_rounds,
            "measured_at": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": os.getloadavg()[0],
            "tools": {}, "floors": {}, "skipped": {}, "failed": {}, "notes": []}
    base = os.path.join(args.work, "%s-%d" % (shape, n))
    remove(base)
    active = []
    for name in args.tools:
        if name in carried_skips:
            cell["skipped"][name] = carried_skips[name]
            continue
        prev = previous_cold.get(name)
        if prev is not None:
            smaller, seconds = prev
            estimate = seconds * n / smaller
            if estimate > 2 * limit(args, name):
                cell["skipped"][name] = (
                    "estimated %.0f s per cold build (%.1f s at N=%s, scaled linearly), "
                    "over the %d s limit" % (estimate, seconds, f"{smaller:,}",
                                             limit(args, name)))
                continue
        active.append(name)

    log("%s N=%d: writing %d projects" % (shape, n, len(active)))
    dirs = {}
    for name in active:
        dirs[name] = os.path.join(base, name)
        workload.write_project(dirs[name], name, shape, n, args.seed)
    logs = os.path.join(base, "logs")
    os.makedirs(logs, exist_ok=True)

    def drop(name, reason, failed=False):
        (cell["failed"] if failed else cell["skipped"])[name] = reason
        cell["tools"].pop(name, None)
        if name in active:
            active.remove(name)
        log("%s N=%d: %s %s: %s" % (shape, n, name, "failed" if failed else "skipped",
                                    reason))

    def run(name, scenario):
        path = os.path.join(logs, "%s-%s.log" % (name, scenario))
        try:
            seconds, rss, code = timed(helper, tools[name].argv, dirs[name], path,
                                       limit(args, name))
        except RuntimeError as e:
            raise Fail(str(e))
        except TimeoutError:
            raise Skip("a %s build took more than %d s at N=%s"
                       % (scenario, limit(args, name), f"{n:,}"))
        if code != 0:
            raise Fail("%s build exited %d; log tail:\n%s" % (scenario, code, tail(path)))
        return seconds, rss

    def guarded(name, fn):
        try:
            return fn()
        except Skip as e:
            drop(name, str(e))
        except Fail as e:
            drop(name, str(e), failed=True)
        return None

    # The probe: one cold build each, which also warms the page cache for the tools.
    digests = {}
    for name in list(active):
        reset(tools[name], dirs[name], shape)
        got = guarded(name, lambda: run(name, "cold"))
        if got is None:
            continue
        log("%s N=%d: %s probe %.2f s" % (shape, n, name, got[0]))
        d = guarded(name, lambda: outputs_digest(dirs[name], shape, n))
        if d is not None:
            digests[name] = d
    check_agreement(cell, digests, drop)

    for name in active:
        cell["tools"][name] = {s: {"times": [], "rss": []} for s in SCENARIOS}
        cell["tools"][name]["noop_first"] = {"times": [], "rss": []}
    floor_dir = dirs[active[0]] if active else None

    def record(name, scenario, got):
        if got is not None:
            cell["tools"][name][scenario]["times"].append(got[0])
            cell["tools"][name][scenario]["rss"].append(got[1])

    def floor(kind, argv):
        if floor_dir is None:
            return
        path = os.path.join(logs, "floor-%s.log" % kind)
        seconds, _, code = timed(helper, [helper] + argv, floor_dir, path,
                                 args.reference_timeout)
        if code != 0:
            raise SystemExit("peers: floors %s failed:\n%s" % (kind, tail(path)))
        entry = cell["floors"].setdefault(kind, {"times": []})
        entry["times"].append(seconds)
        with open(path, encoding="utf-8") as f:
            entry["count"] = int(f.read().strip() or 0)

    for r in range(args.cold_rounds):
        for name in list(active):
            reset(tools[name], dirs[name], shape)
            record(name, "cold", guarded(name, lambda: run(name, "cold")))
        floor("spawn", ["spawn", str(n), str(args.jobs)])
        log("%s N=%d: cold round %d/%d" % (shape, n, r + 1, args.cold_rounds))

    stamps = {}
    for name in list(active):
        record(name, "noop_first", guarded(name, lambda: run(name, "noop")))
        if name in active:
            stamps[name] = newest_output(dirs[name], shape, n)
    for r in range(args.rounds):
        for name in list(active):
            record(name, "noop", guarded(name, lambda: run(name, "noop")))
        floor("stat", ["stat", "."])
    log("%s N=%d: %d no-op rounds" % (shape, n, args.rounds))
    for name in active:
        if newest_output(dirs[name], shape, n) != stamps[name]:
            cell["notes"].append("%s rewrote outputs during the no-op builds" % name)

    k = workload.changed_index(n)
    for r in range(args.rounds):
        for name in list(active):
            path = os.path.join(dirs[name], workload.source_path(k))
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(workload.source_text(k, args.seed, edit=r))
            record(name, "changed", guarded(name, lambda: run(name, "changed")))
    log("%s N=%d: %d changed-input rounds" % (shape, n, args.rounds))

    digests = {}
    for name in list(active):
        d = guarded(name, lambda: outputs_digest(dirs[name], shape, n))
        if d is not None:
            digests[name] = d
    check_agreement(cell, digests, drop)

    cell["load_after"] = os.getloadavg()[0]
    if not args.keep:
        remove(base)
    return cell


def history(results, shape, n):
    """What smaller cells of the shape (from this run or the results file) say about
    size n: the tools skipped there, with their reasons, and each tool's median cold
    time at the largest smaller N it was measured at."""
    carried, previous = {}, {}
    smaller = sorted((c for c in results["cells"].values()
                      if c["shape"] == shape and c["n"] < n), key=lambda c: c["n"])
    for c in smaller:
        for name, reason in sorted(c["skipped"].items()):
            carried.setdefault(name, reason)
        for name, t in sorted(c["tools"].items()):
            if t["cold"]["times"]:
                previous[name] = (c["n"], statistics.median(t["cold"]["times"]))
    return carried, previous


def check_agreement(cell, digests, drop):
    """Every tool must have written the same bytes; the majority (ninja on a tie) is
    taken as right and the others are failures."""
    if len(digests) < 2:
        return
    counts = {}
    for d in digests.values():
        counts[d] = counts.get(d, 0) + 1
    best = max(counts.values())
    winners = sorted(d for d, c in counts.items() if c == best)
    right = digests.get("ninja") if digests.get("ninja") in winners else winners[0]
    for name, d in sorted(digests.items()):
        if d != right:
            drop(name, "its outputs differ from the other tools'", failed=True)


# --- results file ----------------------------------------------------------------------


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
            mem = "%.1f GiB" % (kib / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return {"os": "%s %s %s" % (platform.system(), platform.release(), platform.machine()),
            "cpu": cpu, "cpus": os.cpu_count(), "memory": mem,
            "python": platform.python_version()}


def filesystem(path):
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True).stdout
        return out.splitlines()[1].split()[1]
    except (OSError, IndexError):
        return "unknown"


def orch_commit():
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def load_results(path, fresh):
    if fresh or not os.path.exists(path):
        return {"format": 1, "runs": {}, "cells": {}}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_results(path, results):
    used = {c.get("run") for c in results["cells"].values()}
    results["runs"] = {k: v for k, v in results["runs"].items() if k in used}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# --- main ------------------------------------------------------------------------------


def parse_list(text, allowed, what):
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError("unknown %s %s; choose from %s"
                                         % (what, ", ".join(bad) or "(none)",
                                            ", ".join(allowed)))
    return items


def parse_sizes(text):
    try:
        sizes = sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("sizes are positive integers, e.g. 1000,10000")
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes are positive integers, e.g. 1000,10000")
    return sizes


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Time orch against its peers; write docs/benchmarks.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shapes", default=",".join(workload.SHAPES),
                   type=lambda t: parse_list(t, workload.SHAPES, "shape"))
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), type=parse_sizes)
    p.add_argument("--tools", default=",".join(TOOLS),
                   type=lambda t: parse_list(t, TOOLS, "tool"))
    p.add_argument("--rounds", type=int, default=5, help="no-op and changed rounds")
    p.add_argument("--cold-rounds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=int, default=120,
                   help="seconds; a peer whose run takes longer is skipped at that size")
    p.add_argument("--reference-timeout", type=int, default=900,
                   help="the same for orch and ninja, which every ratio needs")
    p.add_argument("--orch", default=os.path.join(REPO, "target", "release", "orch"))
    p.add_argument("--venv", default=os.path.join(REPO, "target", "bench-venv"))
    p.add_argument("--work", default=os.path.join(REPO, "target", "bench-peers"))
    p.add_argument("--results", default=os.path.join(REPO, "docs", "benchmarks.json"))
    p.add_argument("--report", default=os.path.join(REPO, "docs", "benchmarks.md"))
    p.add_argument("--fresh", action="store_true",
                   help="drop the cells already in the results file")
    p.add_argument("--note", default="", help="a line for the top of the report")
    p.add_argument("--keep", action="store_true", help="keep the generated projects")
    p.add_argument("--report-only", action="store_true",
                   help="render the report from the results file; measure nothing")
    args = p.parse_args(argv)
    if min(args.rounds, args.cold_rounds, args.jobs, args.timeout,
           args.reference_timeout) < 1:
        p.error("--rounds, --cold-rounds, --jobs and the timeouts must be at least 1")
    args.orch = os.path.abspath(args.orch)
    args.work = os.path.abspath(args.work)

    results = load_results(args.results, args.fresh)
    for path in (args.results, args.report):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not args.report_only:
        prepare_tools(args)
        os.makedirs(args.work, exist_ok=True)
        tools = make_tools(args)
        helper = build_helper(args.work)
        run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        results["runs"][run_id] = {
            "command": "benches/peers/run.py " + " ".join(
                a if a.startswith("-") or "," not in a and " " not in a else repr(a)
                for a in (argv if argv is not None else sys.argv[1:])),
            "machine": machine(), "filesystem": filesystem(args.work),
            "versions": dict({name: tools[name].version() for name in args.tools},
                             orch_commit=orch_commit()),
            "note": args.note,
        }
        for shape in args.shapes:
            for n in args.sizes:
                carried, previous = history(results, shape, n)
                cell = measure_cell(args, tools, helper, shape, n, carried, previous)
                cell["run"] = run_id
                results["cells"]["%s/%d" % (shape, n)] = cell
                # Saved after every cell: a long run stopped midway keeps what it measured.
                save_results(args.results, results)
                report.write(results, args.report)
    report.write(results, args.report)
    log("wrote %s%s" % (os.path.relpath(args.report), "" if args.report_only
                        else " and " + os.path.relpath(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
