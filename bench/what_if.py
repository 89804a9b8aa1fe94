"""Proposed engine changes, applied in a benchmark process only, to measure what they would buy.

The benchmark's default numbers are the engine as it is. `--what-if NAMES`
patches the process of our worker first, so the table shows what the
change would give before its owner adopts it:

- winograd:  Convolution layers that are 3x3, stride 1, 2-D, one bottom, use
             bench/winograd.py (F(2x2, 3x3)) instead of im2col + GEMM.

(Measured this way before it landed: caching the failed `import cupy` in
engine.backend._cupy took 12% off LeNet's step, 34.3 -> 30.2 ms.)
"""


def _winograd_usable(layer, bottom):
    import winograd

    return (len(bottom) == 1 and layer.channel_axis == 1 and layer.num_spatial_axes == 2
            and winograd.supported(layer.kernel, layer.stride, layer.dilation, layer.pad))


def patch_winograd():
    from engine.layers.conv import ConvolutionLayer
    from winograd import WinogradConvolution

    original_forward, original_backward = ConvolutionLayer.forward, ConvolutionLayer.backward

    def forward(self, bottom, top):
        if not _winograd_usable(self, bottom):
            return original_forward(self, bottom, top)
        conv = self.__dict__.get("_winograd")
        if conv is None:
            conv = self._winograd = WinogradConvolution(self.pad, self.group)
        bias = self.blobs[1].data if self.bias_term else None
        top[0].data[...] = conv.forward(bottom[0].data, self.blobs[0].data, bias)
        return None

    def backward(self, top, propagate_down, bottom):
        if not _winograd_usable(self, bottom):
            return original_backward(self, top, propagate_down, bottom)
        weight_diff = self.blobs[0].diff if self.param_propagate_down[0] else None
        bias_diff = self.blobs[1].diff if self.bias_term and self.param_propagate_down[1] else None
        dx = self._winograd.backward(bottom[0].data, top[0].diff, self.blobs[0].data, weight_diff, bias_diff,
                                     need_bottom=propagate_down[0])
        if dx is not None:
            bottom[0].diff[...] = dx
        return None

    ConvolutionLayer.forward, ConvolutionLayer.backward = forward, backward


PATCHES = {"winograd": patch_winograd}


def apply(names):
    """Apply the named patches (comma-separated string or list); unknown names raise KeyError."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    for name in names:
        if name not in PATCHES:
            raise KeyError(f"unknown what-if '{name}' (known: {', '.join(PATCHES)})")
        PATCHES[name]()
    return list(names)
