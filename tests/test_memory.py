import pickle
import subprocess
import sys
import textwrap

import array_api_compat.numpy as npx
import numpy as np
import pytest

import fusex
from fusex import memory
from fusex.backends import registry
from fusex.datasets import phantom
from fusex.errors import FusexError, InsufficientMemoryError


def test_bytes_per_item_follows_the_engine_table():
    a, b = memory.ARRAYS_PER_ITEM["numba"]
    assert memory.bytes_per_item("numba", 3, 100, 200, 4) == (3 * a + b) * 100 * 200 * 4
    assert memory.bytes_per_item("unknown", 1, 10, 10, 8) == memory.bytes_per_item("generic", 1, 10, 10, 8)


def test_batch_size_comes_from_free_memory(monkeypatch):
    # maps small enough that the CPU's chunk holds more items than the free memory does
    per_item = memory.bytes_per_item("numba", 3, 64, 64, 4)
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: 10 * per_item)
    assert memory.plan_batch_size(64, (3, 64, 64), 4, "numba", npx, "cpu") == 8  # 80 % of 10 items
    assert memory.plan_batch_size(5, (3, 64, 64), 4, "numba", npx, "cpu") == 5
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: per_item)
    assert memory.plan_batch_size(64, (3, 64, 64), 4, "numba", npx, "cpu") == 1  # fits, if not in 80 %


def test_cpu_chunks_are_capped(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: None)
    stack = 3 * 256 * 256 * 4
    for engine in ("generic", "numba"):
        assert memory.plan_batch_size(64, (3, 256, 256), 4, engine, npx, "cpu") == memory.CPU_CHUNK_BYTES // stack
    assert memory.plan_batch_size(64, (3, 2048, 2048), 4, "numba", npx, "cpu") == 1
    # maps so small that the grid's limit of 65535 maps is below the CPU's chunk
    assert memory.plan_batch_size(10**5, (3, 2, 2), 4, "cupy", npx, "cpu") == 65535 // 3
    assert memory.plan_batch_size(10**5, (3, 2, 2), 4, "cupy", npx, "cpu", batch_size=30000) == 65535 // 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_bad_batch_size_is_named(bad):
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        memory.plan_batch_size(4, (3, 8, 8), 4, "numba", npx, "cpu", bad)


def test_fuse_splits_a_batch_that_does_not_fit(monkeypatch):
    pytest.importorskip("numba")
    samples = [phantom((16, 16), seed=i) for i in range(5)]
    haadf, maps = np.stack([s.haadf for s in samples]), np.stack([s.maps for s in samples])
    sizes = []
    solve = fusex._eager.solve

    def spy(problem, *args, **kwargs):
        sizes.append(problem.counts.shape[0])
        return solve(problem, *args, **kwargs)

    monkeypatch.setattr(fusex._eager, "solve", spy)
    per_item = memory.bytes_per_item("numba", 3, 16, 16, 4)
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: int(2.6 * per_item))
    res = fusex.fuse(haadf, maps, elements=samples[0].elements, params=fusex.FusionParams(n_iter=3), engine="numba")
    assert sizes == [2, 2, 1] and res.maps.shape == maps.shape


@pytest.mark.parametrize("engine", ["generic", "numba"])
def test_memory_does_not_grow_with_iterations(engine):
    if engine == "numba":
        pytest.importorskip("numba")
    import tracemalloc

    samples = [phantom((96, 96), dose=2.0 + i, seed=i) for i in range(4)]
    haadf, maps = np.stack([s.haadf for s in samples]), np.stack([s.maps for s in samples])
    # step 4 makes items backtrack (subsets of several sizes go through the engine)
    params = fusex.FusionParams(n_iter=4, tol=0.0, step=4.0, lambda_tv=[0.001, 0.004, 0.01, 0.03])

    def held(n_iter):
        # memory in use after each iteration: a leak grows it, the transient peaks of backtracking do not
        use = []
        tracemalloc.start()
        try:
            fusex.fuse(
                haadf,
                maps,
                elements=samples[0].elements,
                params=params.replace(n_iter=n_iter),
                engine=engine,
                callback=lambda k, state: use.append(tracemalloc.get_traced_memory()[0]),
            )
            return use
        finally:
            tracemalloc.stop()

    held(30)  # warm up: compilation, and numba's lazily loaded specializations
    use = held(90)
    # the history table grows by a few hundred bytes per iteration; the arrays must not grow at all
    early, late = max(use[10:30]), max(use[60:])
    assert late <= 1.02 * early, f"memory in use grew from {early} to {late} bytes"


def _spy_on_solve(monkeypatch):
    calls = []
    monkeypatch.setattr(fusex._eager, "solve", lambda *args, **kwargs: calls.append(args))
    return calls


def test_an_item_that_cannot_fit_is_refused_before_solving(monkeypatch):
    sample = phantom((32, 32), seed=0)
    calls = _spy_on_solve(monkeypatch)
    needed = memory.bytes_per_item("generic", 3, 32, 32, 4)
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: needed - 1)
    with pytest.raises(InsufficientMemoryError) as info:
        fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, backend="numpy")
    assert isinstance(info.value, MemoryError) and isinstance(info.value, FusexError)
    assert (info.value.needed, info.value.available) == (needed, needed - 1)
    message = str(info.value)
    for part in ("1 item of 3 x 32 x 32 float32 maps", "on the host", "generic engine", "crop", "bin", "GPU"):
        assert part in message
    share = memory.ARRAYS_PER_ITEM["numba"][0] / memory.ARRAYS_PER_ITEM["generic"][0]
    assert f"use engine='numba' (about {share:.0%} of the memory)" in message and calls == []


def test_an_explicit_batch_size_that_cannot_fit_is_refused(monkeypatch):
    per_item = memory.bytes_per_item("numba", 3, 64, 64, 8)
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: 5 * per_item)
    assert memory.plan_batch_size(10, (3, 64, 64), 8, "numba", npx, "cpu", batch_size=5) == 5
    with pytest.raises(InsufficientMemoryError, match=r"batch_size=5 or fewer .*float32 inputs"):
        memory.plan_batch_size(10, (3, 64, 64), 8, "numba", npx, "cpu", batch_size=6)


def test_the_refusal_names_the_gpu(monkeypatch):
    class Cuda:
        type = "cuda"

        def __str__(self):
            return "cuda:1"

    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: 2**20)
    expected = r"on cuda:1 with the cupy engine, but only 1.0 MiB .*device='cpu'"
    with pytest.raises(InsufficientMemoryError, match=expected):
        memory.plan_batch_size(1, (3, 512, 512), 4, "cupy", npx, Cuda())


def test_the_error_survives_pickling():
    error = InsufficientMemoryError("needs 2 GiB", needed=2, available=1)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.needed, copy.available) == ("needs 2 GiB", 2, 1)


def test_host_memory_is_the_least_of_every_limit(monkeypatch):
    monkeypatch.setattr(memory, "_system_available", lambda: 8 * 2**30)
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: 3 * 2**30)
    monkeypatch.setattr(memory, "_rlimit_headroom", lambda: None)
    assert memory.host_available_bytes() == memory.free_bytes(npx, "cpu") == 3 * 2**30
    monkeypatch.setattr(memory, "_rlimit_headroom", lambda: 2**30)
    assert memory.host_available_bytes() == 2**30


def _write_group(path, limit, usage, inactive, limit_file, usage_file, stat_key):
    path.mkdir(parents=True, exist_ok=True)
    (path / limit_file).write_text(f"{limit}\n")
    (path / usage_file).write_text(f"{usage}\n")
    (path / "memory.stat").write_text(f"anon 1\n{stat_key} {inactive}\n")


def test_cgroup_v2_limits_count_up_to_the_root(tmp_path):
    root = tmp_path / "cgroup"
    v2 = ("memory.max", "memory.current", "inactive_file")
    _write_group(root / "user" / "job", "max", 10, 0, *v2)
    _write_group(root / "user", 8 * 2**30, 5 * 2**30, 2**30, *v2)  # the parent's limit binds the job
    membership = tmp_path / "self-cgroup"
    membership.write_text("0::/user/job\n")
    assert memory._cgroup_headroom(root, membership) == 4 * 2**30
    _write_group(root / "user" / "job", 2**30, 2**29, 0, *v2)
    assert memory._cgroup_headroom(root, membership) == 2**29
    membership.write_text("0::/elsewhere\n")  # a cgroup namespace: the process sits at the root
    assert memory._cgroup_headroom(root, membership) is None


def test_cgroup_v1_memory_controller(tmp_path):
    root = tmp_path / "cgroup"
    v1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    _write_group(root / "memory", 9223372036854771712, 1, 0, *v1)  # v1's "unlimited"
    _write_group(root / "memory" / "batch", 6 * 2**30, 3 * 2**30, 2**30, *v1)
    membership = tmp_path / "self-cgroup"
    membership.write_text("5:cpu,cpuacct:/batch\n4:memory:/batch\n0::/\n")
    assert memory._cgroup_headroom(root, membership) == 4 * 2**30
    assert memory._cgroup_headroom(root, tmp_path / "missing") is None


_UNDER_ULIMIT = """
import resource, sys, tracemalloc
import numpy as np
import fusex
from fusex import memory

height = width = 2900  # about 1.3 GB of working memory for 3 float32 maps
rng = np.random.default_rng(0)
haadf = rng.random((height, width), dtype=np.float32)
maps = rng.random((3, height, width), dtype=np.float32)
with open("/proc/self/status") as status:
    mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + 400 * 2**20, resource.RLIM_INFINITY))  # ulimit -v
tracemalloc.start()
try:
    fusex.fuse(haadf, maps, elements=["Sr", "Ti", "O"], engine="numba")
except fusex.errors.InsufficientMemoryError as error:
    peak = tracemalloc.get_traced_memory()[1]
    print(error.needed, error.available, peak)
    sys.exit(0)
sys.exit("fused without an error")
"""


def test_an_address_space_limit_is_respected_before_allocating():
    pytest.importorskip("numba")
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(_UNDER_ULIMIT)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    needed, available, peak = map(int, run.stdout.split())
    assert needed == memory.bytes_per_item("numba", 3, 2900, 2900, 4)
    assert available <= 400 * 2**20 < needed
    assert peak < needed // 4, f"{peak} bytes were allocated before the error"


def test_the_advice_offers_only_engines_that_run_on_the_arrays(monkeypatch):
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as tx

    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: 2**10)
    with pytest.raises(InsufficientMemoryError) as numpy_refusal:
        memory.plan_batch_size(1, (3, 64, 64), 4, "generic", npx, "cpu")
    with pytest.raises(InsufficientMemoryError) as torch_refusal:
        memory.plan_batch_size(1, (3, 64, 64), 4, "generic", tx, torch.device("cpu"))
    assert "engine='numba'" in str(numpy_refusal.value) and "engine=" not in str(torch_refusal.value)
    gpu = "or fuse on a GPU with enough free memory (backend='torch' with device='cuda', or backend='cupy')"
    assert gpu in str(torch_refusal.value)


def test_the_grid_limit_comes_from_the_engine_record(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: None)
    cuda = next(record for record in registry.ENGINES if record.name == "cuda")
    for name in cuda.reports:
        assert memory.plan_batch_size(10**5, (5, 8, 8), 4, name, npx, "cpu", batch_size=10**5) == cuda.max_maps // 5
    assert memory.plan_batch_size(10**5, (5, 8, 8), 4, "generic", npx, "cpu", batch_size=10**5) == 10**5


def test_gpu_memory_is_asked_of_the_arrays_library(monkeypatch):
    pytest.importorskip("torch")
    import dataclasses

    import array_api_compat.torch as tx

    class Cuda:
        type = "cuda"

    asked = []
    torch_record = registry.library("torch")
    fake = dataclasses.replace(torch_record, gpu_free_bytes=lambda module, device: asked.append(device) or 123)
    monkeypatch.setattr(
        registry, "LIBRARIES", tuple(fake if lib is torch_record else lib for lib in registry.LIBRARIES)
    )
    device = Cuda()
    assert memory.free_bytes(tx, device) == 123 and asked == [device]
    memory.free_bytes(tx, "cpu")  # the host's memory, not the library's
    assert asked == [device]
