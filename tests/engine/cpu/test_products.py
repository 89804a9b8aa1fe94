"""engine/cpu/products.py: split products give NumPy's numbers, and the split turns on and off as documented."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import cpu
from engine.cpu import products

ROOT = Path(__file__).resolve().parents[3]
RNG = np.random.default_rng(12)


def _array(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


CASES = {
    "stack": lambda dtype: (_array(16, 40, 24, dtype=dtype), _array(16, 24, 8, dtype=dtype)),
    "columns, broadcast stack": lambda dtype: (_array(1, 6, 50, dtype=dtype), _array(1, 50, 300, dtype=dtype)),
    "rows": lambda dtype: (_array(301, 70, dtype=dtype), _array(70, 9, dtype=dtype)),
    "transposed views": lambda dtype: (_array(90, 33, dtype=dtype).T, _array(120, 90, dtype=dtype).T),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_split_product_is_numpys(two_threads, case, dtype):
    a, b = CASES[case](dtype)
    want = np.matmul(a, b)
    got = products.matmul(a, b)
    assert len(two_threads) == 1, "the product was not split (one part on the pool, one on this thread)"
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)
    out = np.full(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]), np.nan, dtype)
    assert products.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_indexed_product_is_numpys_on_the_permuted_stack(two_threads, dtype):
    a, b = _array(16, 40, 24, dtype=dtype), _array(16, 24, 8, dtype=dtype)
    index = RNG.permutation(16)
    got = products.matmul_indexed(a, b, index)
    assert len(two_threads) == 1, "the stack was not split"
    np.testing.assert_allclose(got, np.matmul(a, b[index]), rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)
    for k in range(16):  # each matrix is one whole BLAS product
        np.testing.assert_array_equal(got[k], np.matmul(a[k], b[index[k]]))


def test_small_products_other_arrays_and_the_off_switch_stay_whole(two_threads, monkeypatch):
    monkeypatch.setattr(products, "MIN_SPLIT", 1 << 21)
    a, b = _array(8, 8), _array(8, 8)
    np.testing.assert_array_equal(products.matmul(a, b), np.matmul(a, b))
    # Enough work, but few outputs over a long inner dimension (a convolution's weight diff).
    monkeypatch.setattr(products, "MIN_SPLIT_OUTPUT", 1 << 12)
    long_a, long_b = _array(25, 9000), _array(9000, 20)
    np.testing.assert_array_equal(products.matmul(long_a, long_b), np.matmul(long_a, long_b))
    # ... and one long enough to chunk, with too little work for it (LeNet's conv1 weight diff).
    longer_a, longer_b = _array(25, 20000), _array(20000, 20)
    np.testing.assert_array_equal(products.matmul(longer_a, longer_b), np.matmul(longer_a, longer_b))
    monkeypatch.setattr(products, "MIN_SPLIT", 1)
    np.testing.assert_array_equal(products.matmul(a.astype(np.int64), b.astype(np.int64)),
                                  np.matmul(a.astype(np.int64), b.astype(np.int64)))
    previous = cpu.set_enabled(False)
    try:
        products.matmul(a, b)
    finally:
        cpu.set_enabled(previous)
    assert not two_threads
    assert products.for_module(np) is products.matmul


@pytest.mark.parametrize("shape_a,shape_b", [((3, 1050), (1050, 5)), ((1, 4, 1050), (1, 1050, 6))])
def test_few_outputs_over_a_long_inner_dimension_sum_fixed_chunks(two_threads, monkeypatch, shape_a, shape_b):
    """Chunks of K_CHUNK terms (a remainder under half a chunk joins the last), added in order, on the pool;
    the same numbers on one thread."""
    monkeypatch.setattr(products, "MIN_SPLIT_OUTPUT", 1 << 12)
    monkeypatch.setattr(products, "K_CHUNK", 128)
    monkeypatch.setattr(products, "MIN_CHUNKED_WORK", 1)
    a, b = _array(*shape_a), _array(*shape_b)
    bounds = [(start, start + 128) for start in range(0, 896, 128)] + [(896, 1050)]
    want = np.matmul(a[..., 0:128], b[..., 0:128, :])
    for start, end in bounds[1:]:
        want += np.matmul(a[..., start:end], b[..., start:end, :])
    got = products.matmul(a, b)
    assert len(two_threads) == 1, "the chunks were not split over the pool"
    np.testing.assert_array_equal(got, want)
    monkeypatch.setitem(products._STATE, "threads", 1)
    np.testing.assert_array_equal(products.matmul(a, b), want)
    assert len(two_threads) == 1


def test_in_parts_covers_the_range_once(two_threads):
    seen = []
    products.in_parts(7, lambda part: seen.extend(range(part.start, part.stop)))
    assert sorted(seen) == list(range(7)) and len(two_threads) == 1


def test_in_turns_hands_out_each_index_once(two_threads):
    seen = []
    products.in_turns(50, lambda indices: seen.extend(indices))
    assert sorted(seen) == list(range(50)) and len(two_threads) == 1


def test_inner_product_weight_gradient_in_row_ranges(two_threads, monkeypatch):
    from engine.layers import inner_product

    monkeypatch.setattr(inner_product, "GRADIENT_BLOCK", 64)  # blocks of 3 rows of 20
    diff, a, b = _array(11, 20), _array(11, 5), _array(5, 20)
    want = diff + np.matmul(a, b)
    inner_product.accumulate_product(diff, a, b)
    assert len(two_threads) == 1
    np.testing.assert_allclose(diff, want, rtol=1e-6)


PROBE = """
import json, numpy as np
from engine.cpu import products
threads = products.threads()
a = np.ones((512, 512), np.float32)
result = {"threads": threads, "product": float(products.matmul(a, a)[0, 0]),
          "pool": products._STATE["pool"] is not None}
if threads > 1:
    import os
    child = os.fork()
    if child == 0:  # a forked child makes its own pool and still splits
        os._exit(0 if products.matmul(a, a)[0, 0] == 512.0 and products._STATE["pid"] == os.getpid() else 1)
    result["child"] = os.waitpid(child, 0)[1]
print(json.dumps(result))
"""


def _probe(**env):
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ENGINE_CPU_SPLIT")}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_threads_follow_omp_num_threads_and_the_switch():
    assert _probe(OMP_NUM_THREADS="1") == {"threads": 1, "product": 512.0, "pool": False}
    assert _probe(OMP_NUM_THREADS="2", ENGINE_CPU_SPLIT="0") == {"threads": 1, "product": 512.0, "pool": False}
    split = _probe(OMP_NUM_THREADS="2")
    assert split["product"] == 512.0
    # NumPy's wheels bundle OpenBLAS, whose thread count the split sets to one.
    assert split["threads"] == 2 and split["pool"] and split["child"] == 0
