"""Weight fillers with Caffe's definitions of fan-in, fan-out and sparsity.

Values are drawn on the host from the engine's generator and copied to the
device in GPU mode, as Caffe's fillers write the CPU copy: one random_seed
gives the same initial weights on the CPU and on the GPU.
"""

import math

import numpy as np

from . import backend
from .errors import CaffeError

_FAN_IN, _FAN_OUT, _AVERAGE = 0, 1, 2  # FillerParameter.VarianceNorm


def _fans(shape):
    count = int(np.prod(shape)) if shape else 1
    fan_in = count // shape[0] if shape else count
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_n(param, shape):
    fan_in, fan_out = _fans(shape)
    if param.variance_norm == _AVERAGE:
        return (fan_in + fan_out) / 2.0
    if param.variance_norm == _FAN_OUT:
        return fan_out
    return fan_in


# Random values are drawn in the blob's own dtype: no float64 copies of large blobs.


def _uniform_in(rand, shape, dtype, low, high):
    values = rand.random(shape, dtype=dtype)
    values *= high - low
    values += low
    return values


def _normal_in(rand, shape, dtype, mean, std):
    values = rand.standard_normal(shape, dtype=dtype)
    values *= std
    values += mean
    return values


def _constant(param, shape, xp, rand, dtype):
    return param.value


def _uniform(param, shape, xp, rand, dtype):
    return _uniform_in(rand, shape, dtype, param.min, param.max)


def _gaussian(param, shape, xp, rand, dtype):
    values = _normal_in(rand, shape, dtype, param.mean, param.std)
    if param.sparse >= 0:
        if len(shape) < 1:
            raise CaffeError("gaussian filler with sparse needs a blob of at least 1 axis")
        keep = param.sparse / shape[0]
        values *= rand.random(shape, dtype=dtype) < keep
    return values


def _positive_unitball(param, shape, xp, rand, dtype):
    values = rand.random(shape, dtype=dtype)
    rows = values.reshape(shape[0], -1)
    rows /= rows.sum(axis=1, keepdims=True)
    return values


def _xavier(param, shape, xp, rand, dtype):
    scale = math.sqrt(3.0 / _variance_n(param, shape))
    return _uniform_in(rand, shape, dtype, -scale, scale)


def _msra(param, shape, xp, rand, dtype):
    std = math.sqrt(2.0 / _variance_n(param, shape))
    return _normal_in(rand, shape, dtype, 0.0, std)


def _bilinear(param, shape, xp, rand, dtype):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise CaffeError(f"bilinear filler needs a 4-axis blob with square kernels, got {shape}")
    size = shape[3]
    f = math.ceil(size / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(size) / f - c)
    kernel = np.outer(ramp, ramp)
    return xp.asarray(np.broadcast_to(kernel, shape))


_FILLERS = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
    "bilinear_upsampling": _bilinear,  # ParseNet's name for the same kernel
}


def fill(array, param):
    """Fill `array` (NumPy or CuPy) in place as FillerParameter `param` says."""
    try:
        filler = _FILLERS[param.type]
    except KeyError:
        raise CaffeError(f"Unknown filler type: {param.type} (known: {', '.join(sorted(_FILLERS))})") from None
    values = filler(param, tuple(array.shape), np, backend.rng(), array.dtype)
    array[...] = backend.to_device(values, backend.get_array_module(array))
    return array


def fill_blob(blob, param):
    fill(blob.data, param)
    return blob
