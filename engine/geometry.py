"""Caffe's output-size arithmetic for convolution, deconvolution and pooling.

Kept in one place because the three rules differ in ways that matter for
weight compatibility: convolution floors (and knows dilation), deconvolution
inverts it, and pooling ceils by default, then drops a last window that would
start inside the bottom/right padding. Chainer's Caffe importer, for one,
gets height 5, kernel 2, stride 2, pad 1 wrong (4 where Caffe says 3).

Functions raise GeometryError (a ValueError) for impossible settings; layers
turn it into a LayerError that names them.
"""


class GeometryError(ValueError):
    """A kernel/stride/pad setting that gives no valid output."""


def kernel_extent(kernel, dilation=1):
    """Input span covered by one dilated kernel: dilation * (kernel - 1) + 1."""
    return dilation * (kernel - 1) + 1


def conv_output_size(size, kernel, pad=0, stride=1, dilation=1):
    """Caffe's convolution: (size + 2 pad - extent) / stride + 1, rounded down."""
    extent = kernel_extent(kernel, dilation)
    span = size + 2 * pad - extent
    if stride <= 0:
        raise GeometryError(f"stride must be positive, got {stride}")
    if span < 0:
        raise GeometryError(f"kernel extent {extent} is larger than the padded input "
                            f"({size} + 2 x {pad} = {size + 2 * pad})")
    return span // stride + 1


def is_pointwise(kernel, pad, stride):
    """Whether a convolution's geometry is 1 x 1 at stride 1 without padding (per axis): its columns are its
    input itself."""
    return all(k == 1 and p == 0 and s == 1 for k, p, s in zip(kernel, pad, stride))


def deconv_output_size(size, kernel, pad=0, stride=1, dilation=1):
    """Caffe's deconvolution: stride (size - 1) + extent - 2 pad."""
    out = stride * (size - 1) + kernel_extent(kernel, dilation) - 2 * pad
    if out <= 0:
        raise GeometryError(f"deconvolution of size {size} with kernel {kernel}, stride {stride}, "
                            f"pad {pad} gives a non-positive output size {out}")
    return out


def pool_output_size(size, kernel, pad=0, stride=1, ceil_mode=True, clip=None):
    """Caffe's pooling size: ceil (or floor) of (size + 2 pad - kernel) / stride, plus one.

    With padding, a last window that would start at or beyond size + pad (that
    is, entirely in the trailing padding) is dropped. Caffe applies this rule
    to both axes as soon as either has padding, hence `clip` (default:
    pad > 0).
    """
    if stride <= 0:
        raise GeometryError(f"stride must be positive, got {stride}")
    span = size + 2 * pad - kernel
    steps = -(-span // stride) if ceil_mode else span // stride
    out = steps + 1
    if clip is None:
        clip = pad > 0
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    if out <= 0:
        raise GeometryError(f"pooling of size {size} with kernel {kernel}, stride {stride}, "
                            f"pad {pad} gives no output")
    if clip and (out - 1) * stride >= size + pad:
        raise GeometryError(f"the last pooling window starts in the padding (size {size}, "
                            f"kernel {kernel}, stride {stride}, pad {pad})")
    return out


def pool_window_sizes(size, kernel, pad, stride, out):
    """Caffe's AVE divisor along one axis: each window clipped to [-pad, size + pad)."""
    sizes = []
    for index in range(out):
        start = index * stride - pad
        end = min(start + kernel, size + pad)
        sizes.append(end - start)
    return sizes


def _per_axis(values, num_axes, name, default):
    """Caffe's rule for repeated fields: none (default), once, or once per spatial axis."""
    values = list(values)
    if default is None and len(values) == 0 or len(values) not in (0, 1, num_axes):
        raise GeometryError(f"{name} must be specified once, or once per spatial dimension "
                            f"({name} specified {len(values)} times; {num_axes} spatial dims).")
    if not values:
        return (default,) * num_axes
    if len(values) == 1:
        return (int(values[0]),) * num_axes
    return tuple(int(v) for v in values)


def _hw_or_repeated(param, name, num_axes, default):
    h, w = f"{name}_h", f"{name}_w"
    repeated = "kernel_size" if name == "kernel" else name
    if param.HasField(h) or param.HasField(w):
        if num_axes != 2:
            raise GeometryError(f"{h} & {w} can only be used for 2D convolution.")
        if len(getattr(param, repeated)):
            raise GeometryError(f"Either {repeated} or {h}/w should be specified; not both.")
        return (int(getattr(param, h)), int(getattr(param, w)))
    return _per_axis(getattr(param, repeated), num_axes, repeated, default)


def conv_spatial_params(param, num_axes):
    """(kernel, stride, pad, dilation) tuples from a ConvolutionParameter, Caffe's checks included."""
    kernel = _hw_or_repeated(param, "kernel", num_axes, None)
    if any(k <= 0 for k in kernel):
        raise GeometryError("Filter dimensions must be nonzero.")
    stride = _hw_or_repeated(param, "stride", num_axes, 1)
    if any(s <= 0 for s in stride):
        raise GeometryError("Stride dimensions must be nonzero.")
    pad = _hw_or_repeated(param, "pad", num_axes, 0)
    dilation = _per_axis(param.dilation, num_axes, "dilation", 1)
    if param.HasField("filter_stride") or param.HasField("filter_stride_h") or param.HasField("filter_stride_w"):
        if len(param.dilation):
            raise GeometryError("Either dilation or filter_stride (its DeepLab-era name) should be "
                                "specified; not both.")
        dilation = _filter_stride(param, num_axes)
    if any(d <= 0 for d in dilation):
        raise GeometryError("Dilation dimensions must be nonzero.")
    return kernel, stride, pad, dilation


def _filter_stride(param, num_axes):
    """DeepLab / ParseNet's dilation: filter_stride OR filter_stride_h and filter_stride_w (2-D)."""
    has_h, has_w = param.HasField("filter_stride_h"), param.HasField("filter_stride_w")
    if param.HasField("filter_stride") and (has_h or has_w) or has_h != has_w:
        raise GeometryError("filter stride is filter_stride OR filter_stride_h and filter_stride_w are required.")
    if has_h:
        if num_axes != 2:
            raise GeometryError("filter_stride_h & filter_stride_w can only be used for 2D convolution.")
        return (int(param.filter_stride_h), int(param.filter_stride_w))
    return (int(param.filter_stride),) * num_axes


def pool_spatial_params(param):
    """(kernel, stride, pad) pairs from a PoolingParameter (kernel None for global pooling)."""
    if param.global_pooling:
        if param.HasField("kernel_size") or param.HasField("kernel_h") or param.HasField("kernel_w"):
            raise GeometryError("With Global_pooling: true Filter size cannot specified")
        kernel = None
    else:
        has_hw = param.HasField("kernel_h") and param.HasField("kernel_w")
        if param.HasField("kernel_size") and (param.HasField("kernel_h") or param.HasField("kernel_w")):
            raise GeometryError("Filter size is kernel_size OR kernel_h and kernel_w; not both")
        if not param.HasField("kernel_size") and not has_hw:
            raise GeometryError("Filter size is required: kernel_size, or both kernel_h and kernel_w "
                                "(or global_pooling: true)")
        if param.HasField("kernel_size"):
            kernel = (param.kernel_size,) * 2
        else:
            kernel = (param.kernel_h, param.kernel_w)
        if min(kernel) <= 0:
            raise GeometryError("Filter dimensions cannot be zero.")
    if param.HasField("pad") and (param.HasField("pad_h") or param.HasField("pad_w")) or \
            param.HasField("pad_h") != param.HasField("pad_w"):
        raise GeometryError("pad is pad OR pad_h and pad_w are required.")
    if param.HasField("stride") and (param.HasField("stride_h") or param.HasField("stride_w")) or \
            param.HasField("stride_h") != param.HasField("stride_w"):
        raise GeometryError("Stride is stride OR stride_h and stride_w are required.")
    pad = (param.pad_h, param.pad_w) if param.HasField("pad_h") else (param.pad,) * 2
    stride = (param.stride_h, param.stride_w) if param.HasField("stride_h") else (param.stride,) * 2
    if min(stride) <= 0:
        raise GeometryError("Stride dimensions cannot be zero.")
    if param.global_pooling and (any(pad) or any(s != 1 for s in stride)):
        raise GeometryError("With Global_pooling: true; only pad = 0 and stride = 1")
    return kernel, tuple(int(s) for s in stride), tuple(int(p) for p in pad)
