"""Proposed engine changes, applied in a benchmark process only, to measure what they would buy.

The benchmark's default numbers are the engine as it is. `--what-if NAMES`
patches the process of our worker first, so the table shows what the
change would give before its owner adopts it (or, for adopted ones, what
the engine would give without it):

- winograd:  every Convolution layer the Winograd path supports (2-D 3x3
             and 5x5, stride 1) takes it, on any device
             (engine.layers.conv.WINOGRAD = "always"; the engine's default,
             "auto", takes it on the CPU where it pays).
- im2col:    no Winograd anywhere: im2col + GEMM for every convolution, as
             before engine/winograd.py was adopted (WINOGRAD = "never").

(Measured this way before they landed: caching the failed `import cupy` in
engine.backend._cupy took 12% off LeNet's step, 34.3 -> 30.2 ms; Winograd
for 3x3 stride-1 convolutions took CaffeNet's step 1313 -> 1238 ms and
ResNet-18's 460 -> 418 ms.)
"""


def _set_winograd(mode):
    from engine.layers import conv

    conv.WINOGRAD = mode


def patch_winograd():
    _set_winograd("always")


def patch_im2col():
    _set_winograd("never")


PATCHES = {"winograd": patch_winograd, "im2col": patch_im2col}


def apply(names):
    """Apply the named patches (comma-separated string or list); unknown names raise KeyError."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    for name in names:
        if name not in PATCHES:
            raise KeyError(f"unknown what-if '{name}' (known: {', '.join(PATCHES)})")
        PATCHES[name]()
    return list(names)
