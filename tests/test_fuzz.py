"""Seeded mutations of real prototxts through tools/summary, tools/train and engine.Net, and of
snapshots and mean files through the Python API that reads them.

Every mutation (truncation, flipped bytes, binary garbage, numbers set to 0,
-1, huge, NaN or a string, dropped braces, deleted, duplicated or swapped
lines) must end in exit status 0, or in status 1 with one line that says
what is wrong: never a traceback, an abort or a run that takes more than
30 s. The tools' main functions run in-process (fast); anything they raise
other than the engine's errors fails the test with the mutation that caused
it, which `python tests/test_fuzz.py SEED` replays. Mangled binary files
(.caffemodel, .solverstate, their HDF5 forms, mean .binaryproto) must be
read or refused with an engine error of one line.

The seeds are the repository's own nets and the reference nets, plus the
third-party corpus when it is beside the checkout. FUZZ_COUNT sets how many
mutations run (default 500), FUZZ_SEED the first seed.
"""

import contextlib
import importlib.machinery
import importlib.util
import io
import os
import random
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from paths import CONFIGS, HAVE_CORPUS, REFERENCE  # noqa: E402

COUNT = int(os.environ.get("FUZZ_COUNT", "500"))
FIRST_SEED = int(os.environ.get("FUZZ_SEED", "0"))
CASE_LIMIT_S = 30
# Mutations that make a net big must be refused from the shapes, not tried: a limit far
# below the machine's keeps refusals fast and the test's memory small.
MEMORY_LIMIT = "512M"
# A second net under the first: allocations that are not blobs (a layer's own buffers) raise
# MemoryError past this much address space instead of exhausting the machine.
ADDRESS_SPACE_HEADROOM = 6 << 30
TRAIN_CASES = ("sgd_step", "adam_sigmoid", "nesterov_poly")


def _net_seeds():
    files = sorted((ROOT / "nets").glob("*/*.prototxt"))
    files += sorted((REFERENCE / "nets").glob("*/net.prototxt"))
    files += sorted((REFERENCE / "data").glob("*/net.prototxt"))
    if HAVE_CORPUS:
        files += sorted(p for p in CONFIGS.rglob("*.prototxt") if "solver" not in p.name)
    return files


# -- mutations ----------------------------------------------------------------------------
NUMBER = re.compile(rb"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?")
REPLACEMENTS = [b"0", b"-1", b"2147483648", b"99999999", b"4294967297", b"1e40", b"nan", b"inf", b"-0.0",
                b'"x"', b"9" * 30, b"0.5", b"-2147483649", b"3"]


def _truncate(data, rng):
    return data[:rng.randrange(len(data) + 1)]


def _flip(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _garbage(data, rng):
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if rng.random() < 0.3:
        return junk * rng.randint(1, 8)  # a binary file where a prototxt should be
    at = rng.randrange(len(data) + 1)
    return data[:at] + junk + data[at:]


def _number(data, rng):
    found = list(NUMBER.finditer(data))
    if not found:
        return data
    for _ in range(rng.randint(1, 3)):
        match = rng.choice(found)
        data = data[:match.start()] + rng.choice(REPLACEMENTS) + data[match.end():]
        found = list(NUMBER.finditer(data)) or found[:0]
        if not found:
            break
    return data


INTEGERS = [b"0", b"1", b"7", b"100000", b"99999999", b"2147483647", b"2147483648"]
FLOATS = [b"0", b"-1", b"1e30", b"-1e-30", b"nan", b"inf", b"-inf", b"-0.0"]


def _value(data, rng):
    """A number replaced by one of its own type that the parser takes: zero, huge, NaN, infinite."""
    found = list(NUMBER.finditer(data))
    if not found:
        return data
    match = rng.choice(found)
    text = match.group()
    pool = FLOATS if b"." in text or b"e" in text else INTEGERS
    return data[:match.start()] + rng.choice(pool) + data[match.end():]


def _brace(data, rng):
    spots = [i for i, c in enumerate(data) if c in b"{}"]
    if not spots:
        return data
    at = rng.choice(spots)
    return data[:at] + data[at + 1:]


def _lines(data, rng):
    lines = data.split(b"\n")
    if len(lines) < 2:
        return data
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    kind = rng.randrange(3)
    if kind == 0:
        del lines[i]
    elif kind == 1:
        lines.insert(j, lines[i])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


MUTATIONS = [_truncate, _flip, _garbage, _number, _value, _value, _value, _brace, _lines, _lines]


def mutate(data, seed):
    """`data` changed by 1 to 3 mutations drawn with `seed`; the names of those applied."""
    rng = random.Random(seed)
    names = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        mutation = rng.choice(MUTATIONS)
        data = mutation(data, rng)
        names.append(mutation.__name__.lstrip("_"))
    return data, names


# -- running the tools in-process ----------------------------------------------------------
def _load_tool(name):
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    loader = importlib.machinery.SourceFileLoader(f"fuzz_tool_{name}", str(ROOT / "tools" / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class _TooSlow(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds):
    def alarm(signum, frame):
        raise _TooSlow(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call_tool(main, argv, program):
    """(exit status, stdout, stderr) of `main()` run as its script runs it; the engine's errors
    become status 1 (as _common.run_tool does), anything else propagates."""
    from engine.errors import CaffeError

    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = [program, *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _deadline(CASE_LIMIT_S):
            try:
                code = main()
            except CaffeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                code = 1
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = old_argv
    return code or 0, out.getvalue(), err.getvalue()


def _check_refusal(code, err, case, program=None):
    assert code in (0, 1), f"{case}: exit status {code}\n{err[-2000:]}"
    if code == 1:
        last = err.rstrip("\n").splitlines()[-1] if err.strip() else ""
        assert last, f"{case}: status 1 without a message"
        assert "Traceback" not in err, f"{case}: traceback\n{err[-2000:]}"
        if program:
            assert last.startswith(f"{program}: "), f"{case}: last line is not the error: {last!r}"
        else:
            assert len(err.rstrip("\n").splitlines()) == 1, f"{case}: more than one line\n{err[-2000:]}"


def _address_space_in_use():
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


@pytest.fixture
def memory_limit(monkeypatch):
    monkeypatch.setenv("ENGINE_MEMORY_LIMIT", MEMORY_LIMIT)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = _address_space_in_use()
    cap = None if in_use is None else in_use + ADDRESS_SPACE_HEADROOM
    if cap is not None and (soft == resource.RLIM_INFINITY or cap < soft) \
            and (hard == resource.RLIM_INFINITY or cap <= hard):
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def summarisable(summary, seeds):
    """The seeds that summarise unchanged (within the memory limit): mutating those reaches the
    layers' own checks, where the others mostly stop at their absent data."""
    good = []
    for path in seeds:
        code, _, err = call_tool(summary.main, ["--model", str(path)], "summary")
        _check_refusal(code, err, f"unmutated {path}")
        if code == 0:
            good.append(path)
    return good


def _run_summary_case(summary, seeds, seed, folder):
    rng = random.Random(seed)
    source = rng.choice(seeds[1] if rng.random() < 0.8 else seeds[0])
    data, names = mutate(source.read_bytes(), seed)
    path = folder / f"mutant_{seed}.prototxt"
    path.write_bytes(data)
    case = f"seed {seed}: {'+'.join(names)} of {source.relative_to(source.parents[2])}"
    started = time.monotonic()
    try:
        code, _, err = call_tool(summary.main, ["--model", str(path)], "summary")
    except _TooSlow:
        pytest.fail(f"{case}: summary took more than {CASE_LIMIT_S} s")
    except Exception as exc:
        raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc
    _check_refusal(code, err, case)
    path.unlink()
    return time.monotonic() - started


def test_summary_survives_mutations(tmp_path, memory_limit):
    """At least COUNT mutated nets through tools/summary, each a table or a one-line refusal."""
    summary = _load_tool("summary")
    seeds = _net_seeds()
    seeds = (seeds, summarisable(summary, seeds))
    assert len(seeds[1]) >= 5, "the nets of nets/ should summarise"
    slowest = 0.0
    for seed in range(FIRST_SEED, FIRST_SEED + COUNT):
        slowest = max(slowest, _run_summary_case(summary, seeds, seed, tmp_path))
    assert slowest < CASE_LIMIT_S


def test_python_api_raises_engine_errors(tmp_path, memory_limit):
    """The same mutations through engine.Net and engine.formats: a net, or an engine.errors exception."""
    import engine
    from engine.errors import CaffeError

    seeds = sorted((ROOT / "nets").glob("*/deploy.prototxt")) + sorted((REFERENCE / "nets").glob("*/net.prototxt"))
    for seed in range(FIRST_SEED, FIRST_SEED + max(20, COUNT // 10)):
        source = random.Random(seed).choice(seeds)
        data, names = mutate(source.read_bytes(), seed)
        path = tmp_path / "mutant.prototxt"
        path.write_bytes(data)
        case = f"seed {seed}: {'+'.join(names)} of {source.relative_to(source.parents[2])}"
        try:
            with _deadline(CASE_LIMIT_S):
                engine.Net(str(path), engine.TEST)
        except CaffeError as exc:
            assert "\n" not in str(exc), case
        except _TooSlow:
            pytest.fail(f"{case}: engine.Net took more than {CASE_LIMIT_S} s")
        except Exception as exc:
            raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc


def _mutate_binary(data, rng):
    """Cut short, flipped bits, or a run of garbage bytes over the file."""
    kind = rng.randrange(3)
    if kind == 0:
        return data[:rng.randrange(len(data))]
    if kind == 1:
        data = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    at = rng.randrange(len(data))
    return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))) + data[at + 1:]


def test_binary_files_survive_mutations(tmp_path, monkeypatch, memory_limit):
    """Mangled .caffemodel, .caffemodel.h5, .solverstate, .solverstate.h5 and mean .binaryproto files:
    each is read, or refused with an engine.errors exception of one line."""
    from engine import caffe_pb2, formats
    from engine.errors import CaffeError
    from engine.solvers import solver_class
    from engine.solvers.netsetup import read_solver_param

    folder = _train_case_folder(tmp_path, "sgd_step")
    monkeypatch.chdir(folder)
    param = read_solver_param("solver.prototxt")
    solver = solver_class(param.type)(param)
    solver.step(1)
    originals = {}
    for fmt in (caffe_pb2.SolverParameter.BINARYPROTO, caffe_pb2.SolverParameter.HDF5):
        solver.param.snapshot_format = fmt
        model, state = solver.snapshot()
        originals[model] = Path(model).read_bytes()
        originals[state] = Path(state).read_bytes()
    mean = formats.array_to_blobproto(np.full((1, 6, 6), 3, np.float32)).SerializeToString()
    originals["mean.binaryproto"] = mean
    readers = {".caffemodel": solver.net.copy_from, ".h5": solver.net.copy_from,
               ".solverstate": solver.restore, ".binaryproto": formats.read_mean}
    names = sorted(originals)
    for seed in range(FIRST_SEED, FIRST_SEED + max(50, COUNT // 2)):
        rng = random.Random(seed)
        name = rng.choice(names)
        target = folder / f"mutant{seed % 7}_{name}"
        target.write_bytes(_mutate_binary(originals[name], rng))
        reader = readers[".solverstate"] if ".solverstate" in name else readers[Path(name).suffix]
        case = f"seed {seed}: {name}"
        try:
            with _deadline(CASE_LIMIT_S):
                reader(str(target))
        except CaffeError as exc:
            assert "\n" not in str(exc) and target.name in str(exc) or "learned_net" in str(exc), \
                f"{case}: {exc}"
        except _TooSlow:
            pytest.fail(f"{case}: reading took more than {CASE_LIMIT_S} s")
        except Exception as exc:
            raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc


def _train_case_folder(tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(REFERENCE / "solvers" / name, folder,
                    ignore=shutil.ignore_patterns("*.npz", "*.log", "state_*", "init.caffemodel"))
    return folder


@pytest.mark.parametrize("target", ["solver.prototxt", "net.prototxt"])
def test_train_survives_mutations(tmp_path, monkeypatch, memory_limit, target):
    """Mutated solvers and nets through tools/train (3 iterations of a tiny net): trained or refused."""
    from engine.solvers.cli import train_main

    count = max(10, COUNT // 12)
    for seed in range(FIRST_SEED, FIRST_SEED + count):
        name = TRAIN_CASES[seed % len(TRAIN_CASES)]
        folder = _train_case_folder(tmp_path / str(seed), name)
        monkeypatch.chdir(folder)
        original = (folder / target).read_bytes()
        data, names = mutate(original, seed)
        (folder / target).write_bytes(data)
        case = f"seed {seed}: {'+'.join(names)} of {name}/{target}"
        try:
            code, _, err = call_tool(lambda: train_main(["--solver", "solver.prototxt", "--iterations", "3"]),
                                     [], "train")
        except _TooSlow:
            if _requested_passes(folder / "solver.prototxt") > LONG_RUN_PASSES:
                continue  # a mutation that asks for that much work (iter_size: 100000) gets it, as in Caffe
            pytest.fail(f"{case}: train took more than {CASE_LIMIT_S} s")
        except Exception as exc:
            raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc
        _check_refusal(code, err, case, program="train")


LONG_RUN_PASSES = 10000


def _requested_passes(solver_path, iterations=3):
    """Forward passes a solver asks for in `iterations` iterations: iter_size each, plus its tests."""
    from engine import formats

    param = formats.read_solver(str(solver_path))
    tests = 1 + iterations // param.test_interval if param.test_interval else 0
    return iterations * max(param.iter_size, 1) + tests * sum(param.test_iter)


if __name__ == "__main__":
    # Replay or extend: python tests/test_fuzz.py FIRST [COUNT]
    import tempfile

    os.environ.setdefault("ENGINE_MEMORY_LIMIT", MEMORY_LIMIT)
    sys.path.insert(0, str(ROOT))
    first = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    tool = _load_tool("summary")
    all_seeds = _net_seeds()
    pools = (all_seeds, summarisable(tool, all_seeds))
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(first, first + count):
            rng = random.Random(s)
            src = rng.choice(pools[1] if rng.random() < 0.8 else pools[0])
            mutant, applied = mutate(src.read_bytes(), s)
            target = Path(tmp) / "mutant.prototxt"
            target.write_bytes(mutant)
            print(s, "+".join(applied), src, call_tool(tool.main, ["--model", str(target)], "summary")[::2])
