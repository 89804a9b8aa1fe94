"""One thread for small arrays: the light kernels' thread count, chosen by the size of their work.

Waking an idle core costs about 130 us on a 2-core guest (engine/cpu/products.py
measures the same for its pool), as long as a light pass over a few hundred
thousand elements takes on one core. BatchNorm, Scale and ReLU on ResNet-18's
res2 maps (8 x 64 x 28 x 28, 401,408 elements) ran two to three times slower on
two threads than on one (forward + backward: 0.67 against 0.28 ms, 0.28
against 0.17, 0.18 against 0.10); on conv1's maps (1.6 million elements) two
threads were faster. So a light kernel (a few operations per element: the
channel maps and sums, ReLU, the layout moves, Winograd's moves to and from
channels-last, the SGD update) runs on the calling thread alone below
MIN_PARALLEL elements of its first array, and on every kernel thread from
there. (The channels-last moves of ResNet-18's res5 to res2 inputs, 65,536
to 401,408 elements, took 34-186 us on one thread against 86-201 on two into
column phases, and 136-169 against 161-218 back from them; only res2's move
back ran faster on two, 235 against 264.) Heavier kernels (im2col, pooling, LRN,
depthwise, Winograd) keep their threads at any size.

The choice is made outside the compiled code: numba cannot cache a function
that sets its own thread count. `one_thread` makes the same choice for code
that runs kernels on the threads of engine/cpu/products.py's pool, each
thread on work of its own.
"""

import contextlib
import functools

from numba import get_num_threads, set_num_threads

MIN_PARALLEL = 1 << 20


@contextlib.contextmanager
def one_thread():
    """The kernels called on this thread inside the block run on it alone (numba's thread count is per
    thread); the count is restored after."""
    previous = get_num_threads()
    if previous == 1:
        yield
        return
    set_num_threads(1)
    try:
        yield
    finally:
        set_num_threads(previous)


def light(kernel):
    """`kernel` (a numba dispatcher whose first argument is its largest array) run on one thread below
    MIN_PARALLEL elements of that array."""

    @functools.wraps(kernel)
    def run(array, *args):
        if array.size >= MIN_PARALLEL:
            return kernel(array, *args)
        with one_thread():
            return kernel(array, *args)

    run.py_func = kernel.py_func  # the compiled function's source, as the tests' spies look for it
    run.kernel = kernel
    return run
