"""Everything that needs a GPU, in one command: the GPU tests, memory, roofline and batch throughput.

Run from the repository root on a machine with one NVIDIA GPU, torch (CUDA build) and CuPy
installed (``pip install -r backends/torch-cuda.txt -e ".[test,bench]"``):

    python scripts/gpu_check.py

Steps, in order, each under its own time limit (its whole process tree is killed when it runs
over), all of them within ``--budget`` seconds (8 minutes by default):

1. ``preflight``: an NVIDIA GPU (``nvidia-smi``), and each GPU target of fusex's backend
   registry (``torch-cuda``, ``cupy``) able to use it; without them the check stops here, at
   once, with exit status 2;
2. ``tests``: ``pytest -m "not slow" -k "cuda or cupy or gpu or devices"``, the torch-CUDA and
   CuPy cases of the test suite (the ``torch-cuda`` and ``cupy`` backend parameters, the CuPy
   engine's and the CUDA source's tests, and the tests of device handling);
3. ``memory``: ``scripts/memory.py --backends torch-cuda cupy``;
4. ``roofline``: ``scripts/roofline.py --size 2048 --backends torch-cuda,cupy``;
5. ``throughput``: asv's ``FuseBatch.track_throughput`` on the GPU backends
   (``asv run --python=same --quick --dry-run --launch-method=spawn``; ``asv machine --yes``
   first when this machine has no ``~/.asv-machine.json``).

It prints a pass/fail summary per step and writes the numbers, with that summary, as a markdown
fragment to ``--output`` (``docs/figures/gpu-check.md``, which ``docs/benchmarks.md`` includes);
each step's full output goes to ``--logs``.  The fragment is written unless the preflight
failed, so a GPU-less run leaves the documented numbers alone.  Exit status: 0 when every step
passed, 1 when one failed or ran out of time, 2 when the preflight failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT = "FuseBatch.track_throughput"
TEST_SELECTION = "cuda or cupy or gpu or devices"

# What the preflight asks of the machine, in a child process: importing torch or CuPy on a broken
# driver can hang, and then only the step's time limit ends it.  argv: the GPU targets' labels.
_PREFLIGHT = """
import json, sys
from fusex.backends import registry
targets = [t for t in registry.targets() if t.label in sys.argv[1:]]
missing = {t.label: t.requirements for t in targets if not registry.library(t.library).usable(t.device)}
versions = {}
for module in ("numpy", *{registry.library(t.library).module for t in targets}):
    try:
        versions[module] = __import__(module).__version__
    except ImportError:
        versions[module] = None
print(json.dumps({"missing": missing, "versions": versions}))
"""


def gpu_labels() -> list[str]:
    """Return the labels of fusex's GPU targets (``torch-cuda``, ``cupy``), from its backend registry."""
    from fusex.backends import registry

    return [target.label for target in registry.targets() if target.device == "cuda"]


@dataclass
class Step:
    """One step of the check: its command, time limit, and what it produced."""

    name: str
    what: str
    command: list[str]
    limit: float
    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    status: str = "not run"
    seconds: float = 0.0
    detail: str = ""
    output: str = ""
    errors: str = ""


def run_step(step: Step, remaining: float, logs: Path) -> None:
    """Run ``step`` under ``min(step.limit, remaining)`` seconds; record its status, output and errors.

    On time-out the step's whole process tree is killed, so nothing it started (asv's
    benchmark processes, which asv puts in process groups of their own, or memory.py's
    children) outlives it or keeps its output open.
    """
    limit = min(step.limit, remaining)
    if limit <= 0:
        step.status, step.detail = "not run", "no time left in the budget"
        return
    start = time.monotonic()
    process = subprocess.Popen(
        step.command,
        cwd=step.cwd,
        env=os.environ | step.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        step.output, step.errors = process.communicate(timeout=limit)
        step.status = "passed" if process.returncode == 0 else "failed"
        if process.returncode:
            step.detail = f"exit status {process.returncode}"
    except subprocess.TimeoutExpired:
        for pid in process_tree(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        step.output, step.errors = process.communicate()
        step.status, step.detail = "timed out", f"killed after {limit:.0f} s"
    step.seconds = time.monotonic() - start
    log = f"$ {shlex.join(step.command)}\n{step.output}\n--- stderr ---\n{step.errors}"
    (logs / f"{step.name}.log").write_text(log)


def process_tree(root: int) -> list[int]:
    """Return ``root`` and every process descended from it, from the parent ids in ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (command) state ppid ...": the command may hold spaces and parentheses
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def gpu_name() -> str | None:
    """Return ``nvidia-smi``'s name and driver of the first GPU, or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return None
    name, _, driver = lines[0].partition(",")
    return f"{name.strip()} (driver {driver.strip()})"


def preflight(step: Step, gpu: str, logs: Path, budget: float) -> dict | None:
    """Check that every GPU target can use ``gpu``; return the versions found, or None (``step`` says why)."""
    run_step(step, budget, logs)
    if step.status != "passed":
        last = (step.errors.strip().splitlines() or ["no message"])[-1]
        step.detail = f"{step.detail}; importing fusex, torch or CuPy failed: {last}"
        return None
    report = json.loads(step.output.strip().splitlines()[-1])
    if report["missing"]:
        files = " ".join(f"-r backends/{name}" for name in dict.fromkeys(report["missing"].values()) if name)
        step.status = "failed"
        step.detail = f"{' and '.join(report['missing'])} cannot use the GPU {gpu}: pip install {files}"
        return None
    step.detail = gpu
    return {"gpu": gpu, **report["versions"]}


def summarize_tests(step: Step, junit: Path) -> None:
    """Put the counts of pytest's JUnit report into ``step.detail``."""
    if not junit.is_file():
        return
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    words = [f"{passed} passed", f"{counts['failures'] + counts['errors']} failed", f"{counts['skipped']} skipped"]
    step.detail = ", ".join(words) + (f"; {step.detail}" if step.detail else "")


def asv_table(output: str, benchmark: str, labels: list[str]) -> str:
    """Return the result table asv printed for ``benchmark``, without asv's ``[ n%] ···`` prefixes.

    Only the rows of the backends in ``labels`` are kept: the others are left out (``n/a``).
    """
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if f"{benchmark}" in line and "···" in line), None)
    if start is None:
        return ""
    table = []
    for line in lines[start + 1 :]:
        if re.match(r"^\[\s*[\d.]+%\]", line) and "···" in line:
            # the prefix's width in spaces, so that the table's first line stays aligned with the rest
            text = " " * (line.index("···") + 3) + line.split("···", 1)[1]
            if benchmark in text or (table and not text.strip().startswith(("=", "-", "|"))):
                break
            table.append(text.rstrip())
        elif line.startswith(" ") and line.strip():
            first = line.split()[0]
            if first in labels or first == "backend" or first.startswith(("=", "-")):
                table.append(line.rstrip())
        else:
            break
    indent = min((len(line) - len(line.lstrip()) for line in table if line.strip()), default=0)
    return "\n".join(line[indent:] for line in table)


def check_throughput(step: Step, labels: list[str]) -> None:
    """Fail the throughput step if asv printed no result table, or a GPU case failed or was skipped."""
    if step.status != "passed":
        return
    table = asv_table(step.output, THROUGHPUT, labels)
    if not table:
        step.status, step.detail = "failed", "asv printed no result table"
    elif re.search(r"\b(failed|n/a)\b", table):
        step.status, step.detail = "failed", "a GPU case failed or was skipped (see the log)"


def fragment(steps: list[Step], labels: list[str], versions: dict, started: datetime.datetime, total: float) -> str:
    """Return the markdown that docs/benchmarks.md includes: the summary, then each step's numbers."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    where = f"`{commit.stdout.strip() or 'unknown'}`" + (" with local changes" if dirty.stdout.strip() else "")
    libraries = ", ".join(f"{name} {version}" for name, version in versions.items() if name != "gpu" and version)
    lines = [
        f"One run of `python scripts/gpu_check.py` on {versions['gpu']}, {started:%Y-%m-%d %H:%M} UTC, "
        f"fusex at commit {where}, {libraries}; {total:.0f} s in all.",
        "",
        "| step | result | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {s.what} | {s.status}{': ' + s.detail if s.detail else ''} | {s.seconds:.0f} |" for s in steps]
    by_name = {s.name: s for s in steps}
    memory, roofline, throughput = by_name["memory"], by_name["roofline"], by_name["throughput"]
    if memory.status == "passed":
        table = [line for line in memory.output.splitlines() if line.startswith("|")]
        lines += ["", f"Peak working memory ({memory.what}):", "", *table]
    if roofline.status == "passed":
        lines += ["", f"Roofline ({roofline.what}):", "", "```text", roofline.output.strip(), "```"]
    if throughput.status == "passed":
        lines += ["", f"{throughput.what}, fusions of 3 x 256 x 256 per second (`--quick`: one sample each):", ""]
        lines += ["```text", asv_table(throughput.output, THROUGHPUT, labels), "```"]
    return "\n".join(lines) + "\n"


def make_steps(labels: list[str], junit: Path) -> list[Step]:
    """Return the check's steps, for the GPU targets ``labels``; pytest writes its JUnit report to ``junit``."""
    junit.unlink(missing_ok=True)
    python = sys.executable
    tests = [python, "-m", "pytest", "-m", "not slow", "-k", TEST_SELECTION, "-q", "-p", "no:cacheprovider"]
    memory = [python, "scripts/memory.py", "--backends", *labels]
    roofline = [python, "scripts/roofline.py", "--size", "2048", "--backends", ",".join(labels)]
    asv = [python, "-m", "asv"]
    # spawn, not asv's fork server: a fresh process per case cannot inherit a CUDA context
    throughput = [*asv, "run", "--python=same", "--quick", "--dry-run", "--show-stderr", "--launch-method=spawn"]
    throughput += ["-b", THROUGHPUT]
    if not (Path.home() / ".asv-machine.json").is_file():
        throughput = ["sh", "-c", f"{shlex.join([*asv, 'machine', '--yes'])} && {shlex.join(throughput)}"]
    return [
        Step("preflight", f"GPU for {', '.join(labels)}", [python, "-c", _PREFLIGHT, *labels], 60),
        Step("tests", f'GPU tests: `pytest -m "not slow" -k "{TEST_SELECTION}"`', [*tests, f"--junitxml={junit}"], 240),
        Step("memory", f"`{shlex.join(memory[1:])}`", memory, 120),
        Step("roofline", f"`{shlex.join(roofline[1:])}`", roofline, 90),
        Step(
            "throughput",
            f"asv `{THROUGHPUT}` on {', '.join(labels)}",
            throughput,
            150,
            cwd=ROOT / "asv_bench",
            env={"FUSEX_BENCH_BACKENDS": ",".join(labels)},
        ),
    ]


def main() -> int:
    """Run the steps, print the summary, write the fragment; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps together (default 480)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "figures" / "gpu-check.md")
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "fusex-gpu-check")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.monotonic()
    gpu = gpu_name()
    if gpu is None:
        print("[gpu_check] no NVIDIA GPU here (nvidia-smi is missing or lists none): run this on a GPU machine")
        print("[gpu_check] nothing was run and nothing was written", file=sys.stderr)
        return 2
    labels = gpu_labels()
    steps = make_steps(labels, args.logs / "tests.xml")
    versions = preflight(steps[0], gpu, args.logs, args.budget)
    if versions is not None:
        for step in steps[1:]:
            print(f"[gpu_check] {step.name} ...", flush=True)
            run_step(step, args.budget - (time.monotonic() - clock), args.logs)
            if step.name == "tests":
                summarize_tests(step, args.logs / "tests.xml")
            elif step.name == "throughput":
                check_throughput(step, labels)
    total = time.monotonic() - clock
    print(f"\n[gpu_check] summary ({total:.0f} s of a {args.budget:.0f} s budget; logs in {args.logs}):")
    for step in steps:
        print(f"  {step.name:<11} {step.status:<10} {step.seconds:6.0f} s  {step.detail}")
    if versions is None:
        sys.stdout.flush()
        print("[gpu_check] preflight failed: nothing else was run and nothing was written", file=sys.stderr)
        return 2
    args.output.write_text(fragment(steps, labels, versions, started, total))
    print(f"[gpu_check] numbers written to {args.output}")
    return 0 if all(step.status == "passed" for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
