#!/usr/bin/env python3
"""The Luigi side of `cargo xtask bench`: the same shapes as flow-bench, as
Luigi tasks, so the table can show flow's speed-up.

    luigi_bench.py chain N    # step i requires step i-1
    luigi_bench.py fanout N   # root -> N-2 leaves -> sink

Prints one JSON line:
    {"shape": ..., "steps": N, "wall_ms": ..., "import_ms": ..., ...}

`wall_ms` runs from just before `luigi.build` to its return: scheduling,
dependency resolution and running every task. Importing Luigi is reported
apart, as `import_ms`.

Setup, chosen to give Luigi its best case:
  * the local (in-process) scheduler;
  * one worker by default: with more than one, Luigi forks a process per task,
    which only adds cost for tasks that do nothing (`--workers` to try);
  * completion kept in memory (a class-level set behind `complete()`), so no
    target touches the disk; `--target file` uses a `LocalTarget` per task in
    a temporary directory instead (required with `--workers` > 1, as forked
    tasks cannot update the parent's memory).
Luigi's local scheduler keeps no durable state; flow stores every state
change in SQLite. The comparison is therefore generous to Luigi.
"""

import time

_IMPORT_START = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import luigi  # noqa: E402

IMPORT_MS = (time.perf_counter() - _IMPORT_START) * 1000.0

# Task ids that have run, when completion is kept in memory.
DONE = set()
# Where LocalTargets live, when completion is kept in files.
TARGET_DIR = None


class BenchTask(luigi.Task):
    """A task that does nothing; complete once it has run."""

    def output(self):
        if TARGET_DIR is None:
            return []
        return luigi.LocalTarget(os.path.join(TARGET_DIR, self.task_id))

    def complete(self):
        if TARGET_DIR is None:
            return self.task_id in DONE
        return super().complete()

    def run(self):
        if TARGET_DIR is None:
            DONE.add(self.task_id)
        else:
            with self.output().open("w") as f:
                f.write("")


class ChainStep(BenchTask):
    """Step i of a chain: requires step i-1."""

    i = luigi.IntParameter()

    def requires(self):
        return ChainStep(i=self.i - 1) if self.i > 0 else []


class FanoutRoot(BenchTask):
    """The root of the fan-out."""


class FanoutLeaf(BenchTask):
    """One of the leaves: requires the root."""

    j = luigi.IntParameter()

    def requires(self):
        return FanoutRoot()


class FanoutSink(BenchTask):
    """The sink: requires every leaf."""

    leaves = luigi.IntParameter()

    def requires(self):
        return [FanoutLeaf(j=j) for j in range(self.leaves)]


def main():
    global TARGET_DIR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=["chain", "fanout"])
    parser.add_argument("steps", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--target", choices=["memory", "file"], default="memory")
    args = parser.parse_args()
    if args.workers > 1 and args.target == "memory":
        parser.error("--workers > 1 forks a process per task: use --target file")
    if args.shape == "chain":
        if args.steps < 1:
            parser.error("a chain needs at least 1 step")
        top = ChainStep(i=args.steps - 1)
        shape = f"chain-{args.steps}"
    else:
        if args.steps < 3:
            parser.error("a fan-out needs at least 3 steps")
        top = FanoutSink(leaves=args.steps - 2)
        shape = f"fanout-{args.steps}"

    # Luigi logs every task at INFO; keep the terminal out of the timing.
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    logging.getLogger("luigi").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="luigi-bench-") as tmp:
        if args.target == "file":
            TARGET_DIR = tmp
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * args.steps + 1000))
        started = time.perf_counter()
        ok = luigi.build(
            [top],
            local_scheduler=True,
            workers=args.workers,
            log_level="WARNING",
            no_lock=True,
        )
        wall_ms = (time.perf_counter() - started) * 1000.0
        if args.target == "memory":
            ran = len(DONE)
        else:
            ran = len(os.listdir(tmp))
    if not ok or ran != args.steps:
        print(f"luigi_bench: build ok={ok}, {ran} of {args.steps} tasks ran", file=sys.stderr)
        sys.exit(1)
    print(
        json.dumps(
            {
                "shape": shape,
                "steps": args.steps,
                "wall_ms": round(wall_ms, 3),
                "import_ms": round(IMPORT_MS, 3),
                "workers": args.workers,
                "target": args.target,
                "luigi_version": luigi.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
