"""Checks of the peer harness' pure parts: the workload's graph and the report.

Run: python3 -m unittest discover -s benches/peers
"""

import json
import math
import os
import sys
import tempfile
import unittest

# No __pycache__ beside the sources: nothing to ignore in git.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
import workload  # noqa: E402


def depth(deps):
    d = []
    for up in deps:
        d.append(1 + max((d[j] for j in up), default=0))
    return max(d)


class Workload(unittest.TestCase):
    def test_same_inputs_give_the_same_graph_and_another_seed_another(self):
        a = workload.upstreams("layered", 1000, 1)
        self.assertEqual(a, workload.upstreams("layered", 1000, 1))
        self.assertNotEqual(a, workload.upstreams("layered", 1000, 2))

    def test_layered_is_sqrt_n_deep_with_one_to_three_earlier_upstreams(self):
        for n in (1, 2, 10, 1000, 1001):
            deps = workload.upstreams("layered", n, 7)
            self.assertEqual(len(deps), n)
            self.assertEqual(depth(deps), max(1, round(math.sqrt(n))), n)
            for i, up in enumerate(deps):
                self.assertLessEqual(len(up), 3)
                self.assertEqual(up, sorted(set(up)))
                self.assertTrue(all(j < i for j in up))

    def test_chain_and_wide(self):
        self.assertEqual(workload.upstreams("chain", 3, 1), [[], [0], [1]])
        self.assertEqual(workload.upstreams("wide", 2, 1), [[], []])
        self.assertEqual(depth(workload.upstreams("chain", 50, 1)), 50)

    def test_every_tool_runs_the_same_command_text(self):
        deps = workload.upstreams("layered", 100, 1)
        i = 99
        cmd = workload.command("layered", deps, i)
        self.assertTrue(cmd.startswith("cksum src/f99.txt out/p"), cmd)
        with tempfile.TemporaryDirectory() as tmp:
            for tool in ("orch", "ninja", "make"):
                workload.write_project(os.path.join(tmp, tool), tool, "layered", 100, 1)
            with open(os.path.join(tmp, "orch", "Orchfile.toml"), encoding="utf-8") as f:
                self.assertIn('run = "%s"' % cmd, f.read())
            ins = " ".join(workload.inputs("layered", deps, i))
            with open(os.path.join(tmp, "ninja", "build.ninja"), encoding="utf-8") as f:
                self.assertIn("build out/p99.txt: r %s\n" % ins, f.read())
            with open(os.path.join(tmp, "make", "Makefile"), encoding="utf-8") as f:
                self.assertIn("out/p99.txt: %s\n\tcksum $^ > $@\n" % ins, f.read())


class Report(unittest.TestCase):
    def results(self):
        def series(t, rss):
            return {"times": [t, t * 1.1, t * 0.9], "rss": [rss] * 3}

        tools = {
            name: {"cold": series(2.0 * f, 9000), "noop": series(0.01 * f, 5000),
                   "changed": series(0.02 * f, 5000), "noop_first": series(0.02 * f, 5000)}
            for name, f in (("ninja", 1.0), ("orch", 2.0))
        }
        cell = {"shape": "wide", "n": 1000, "seed": 1, "jobs": 2, "rounds": 3,
                "cold_rounds": 3, "measured_at": "x", "load_before": 1.0,
                "load_after": 1.0, "tools": tools, "skipped": {"doit": "too slow"},
                "failed": {}, "notes": [], "run": "r1",
                "floors": {"stat": {"times": [0.001], "count": 3000},
                           "spawn": {"times": [1.0], "count": 1000}}}
        run = {"command": "benches/peers/run.py", "note": "busy",
               "machine": {"os": "Linux", "cpu": "x", "cpus": 2, "memory": "1 GiB",
                           "python": "3.11"},
               "filesystem": "ext4", "versions": {"orch": "orch 0.1.0", "ninja": "1.11.1"}}
        return {"format": 1, "runs": {"r1": run}, "cells": {"wide/1000": cell}}

    def test_ratios_skips_and_charts(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "benchmarks.md")
            report.write(self.results(), path)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            self.assertIn("| wide 1,000, no-op | 2.00 |", text)
            self.assertIn("| wide 1,000, peak RSS (no-op) | 1.00 |", text)
            self.assertIn("wide 1,000: doit skipped: too slow", text)
            self.assertIn("![no-op](benchmarks-noop.svg)", text)
            with open(os.path.join(tmp, "benchmarks-noop.svg"), encoding="utf-8") as f:
                svg = f.read()
            self.assertIn("<polyline", svg)
            report.write(json.loads(json.dumps(self.results())), path)
            with open(path, encoding="utf-8") as f:
                self.assertEqual(text, f.read())


if __name__ == "__main__":
    unittest.main()
