"""Per-channel reductions and broadcasts for BatchNorm and Scale on CuPy arrays.

An array is viewed as (outer, dim, inner), as Scale's geometry has it (for
BatchNorm: (num, channels, spatial)); a "channel" is one index of `dim`.
`channel_sums` reduces over the outer and inner axes in one pass with
double accumulators: blocks own a channel and a share of the outer axis,
so the batch fills the GPU even when there are few channels, and a short
second reduction adds the shares. The broadcasts are elementwise kernels
that find their channel from the flat index.
"""

import math

import numpy as np

from . import elementwise

_SUMS = """
extern "C" __global__ void engine_channel_sums_{T}(
        const {T}* a, const {T}* b, const {T}* mean, int outer, int dim, int inner, int splits,
        int mode, {T}* out1, {T}* out2) {{
    const int c = blockIdx.x, s = blockIdx.y;
    const int first = (int)((long long)outer * s / splits), last = (int)((long long)outer * (s + 1) / splits);
    const int count = (last - first) * inner;
    const double m = mode == 1 ? (double)mean[c] : 0.0;
    double acc1 = 0.0, acc2 = 0.0;
#define ENGINE_ACCUMULATE(index) {{ \
        const double v = (double)a[index]; \
        if (mode == 0) {{ acc1 += v; }} \
        else if (mode == 1) {{ acc1 += (v - m) * (v - m); }} \
        else {{ acc1 += v; acc2 += v * (double)b[index]; }} }}
    if (inner >= (int)blockDim.x) {{
        // Rows of one channel are long: the threads sweep each row, no index division.
        for (int o = first; o < last; ++o) {{
            const long long row = ((long long)o * dim + c) * inner;
            for (int j = threadIdx.x; j < inner; j += blockDim.x) ENGINE_ACCUMULATE(row + j)
        }}
    }} else {{
        for (int k = threadIdx.x; k < count; k += blockDim.x) {{
            ENGINE_ACCUMULATE(((long long)(first + k / inner) * dim + c) * inner + k % inner)
        }}
    }}
#undef ENGINE_ACCUMULATE
    __shared__ double shared1[256], shared2[256];
    shared1[threadIdx.x] = acc1;
    shared2[threadIdx.x] = acc2;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {{
        if (threadIdx.x < half) {{
            shared1[threadIdx.x] += shared1[threadIdx.x + half];
            shared2[threadIdx.x] += shared2[threadIdx.x + half];
        }}
        __syncthreads();
    }}
    if (threadIdx.x == 0) {{
        out1[c * splits + s] = ({T})shared1[0];
        if (mode == 2) out2[c * splits + s] = ({T})shared2[0];
    }}
}}
"""

_THREADS = 256
_TARGET_BLOCKS = 1024
_RAW = {}


def _sums_kernel(dtype):
    name = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[np.dtype(dtype)]
    kernel = _RAW.get(name)
    if kernel is None:
        import cupy

        kernel = _RAW[name] = cupy.RawKernel(_SUMS.format(T=name), f"engine_channel_sums_{name}")
    return kernel


SUM, CENTERED_SQUARES, SUM_AND_DOT = 0, 1, 2


def channel_sums(a, geometry, mode=SUM, b=None, mean=None):
    """Per-channel sum of `a` (mode SUM), of (a - mean)^2 (CENTERED_SQUARES), or the pair
    (sum of a, sum of a * b) (SUM_AND_DOT); arrays are contiguous, viewed as `geometry`."""
    import cupy

    outer, dim, inner = (int(g) for g in geometry)
    splits = max(1, min(outer, math.ceil(_TARGET_BLOCKS / max(dim, 1))))
    out1 = cupy.empty(dim * splits, dtype=a.dtype)
    out2 = cupy.empty(dim * splits, dtype=a.dtype) if mode == SUM_AND_DOT else out1
    b = a if b is None else b
    mean = a if mean is None else mean
    _sums_kernel(a.dtype)((dim, splits), (_THREADS,),
                          (a, b, mean, np.int32(outer), np.int32(dim), np.int32(inner), np.int32(splits),
                           np.int32(mode), out1, out2))
    first = out1.reshape(dim, splits).sum(axis=1)
    if mode == SUM_AND_DOT:
        return first, out2.reshape(dim, splits).sum(axis=1)
    return first


def normalize(x, mean, std, inner, dim, out, saved=None):
    """out = (x - mean[c]) / std[c]; `saved`, when given, gets the same values."""
    if saved is None:
        elementwise("engine_channel_normalize", "T x, raw T mean, raw T std, int32 inner, int32 dim", "T y",
                    "const int c = (i / inner) % dim; y = (x - mean[c]) / std[c]")(x, mean, std, inner, dim, out)
        return
    elementwise("engine_channel_normalize_saved", "T x, raw T mean, raw T std, int32 inner, int32 dim",
                "T y, T kept",
                "const int c = (i / inner) % dim; const T v = (x - mean[c]) / std[c]; y = v; kept = v"
                )(x, mean, std, inner, dim, out, saved)


def batch_norm_backward(dy, y, mean_dy, mean_dy_y, std, inner, dim, dx):
    """dx = (dy - mean_dy[c] - y * mean_dy_y[c]) / std[c], Caffe's BatchNorm gradient."""
    elementwise("engine_batch_norm_backward",
                "T dy, T y, raw T mean_dy, raw T mean_dy_y, raw T std, int32 inner, int32 dim", "T dx",
                "const int c = (i / inner) % dim; dx = (dy - mean_dy[c] - y * mean_dy_y[c]) / std[c]"
                )(dy, y, mean_dy, mean_dy_y, std, inner, dim, dx)


def divide(dy, std, inner, dim, dx):
    elementwise("engine_channel_divide", "T dy, raw T std, int32 inner, int32 dim", "T dx",
                "dx = dy / std[(i / inner) % dim]")(dy, std, inner, dim, dx)


def scale(x, factor, inner, dim, out, bias=None):
    """out = x * factor[c] (+ bias[c])."""
    if bias is None:
        elementwise("engine_channel_scale", "T x, raw T factor, int32 inner, int32 dim", "T y",
                    "y = x * factor[(i / inner) % dim]")(x, factor, inner, dim, out)
        return
    elementwise("engine_channel_scale_bias", "T x, raw T factor, raw T bias, int32 inner, int32 dim", "T y",
                "const int c = (i / inner) % dim; y = x * factor[c] + bias[c]")(x, factor, bias, inner, dim, out)
