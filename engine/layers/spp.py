"""SPP: spatial pyramid pooling, built from Pooling layers as Caffe builds it.

Level l pools into 2^l x 2^l bins: kernel = ceil(size / bins), stride =
kernel, pad = (kernel * bins - size + 1) / 2 (integer division), so Caffe's
pooling rules (ceil, last-window clip, padded AVE divisor) decide the bins.
Levels are flattened per sample and concatenated, level 0 first; with a
single level Caffe pools straight into the top, which keeps its 4 axes
(num, channels, 1, 1).
"""

from .. import caffe_pb2
from ..blob import Blob
from ..errors import CaffeError
from .base import Layer, register_layer
from .pooling import PoolingLayer

_METHODS = {
    caffe_pb2.SPPParameter.MAX: caffe_pb2.PoolingParameter.MAX,
    caffe_pb2.SPPParameter.AVE: caffe_pb2.PoolingParameter.AVE,
    caffe_pb2.SPPParameter.STOCHASTIC: caffe_pb2.PoolingParameter.STOCHASTIC,
}


def level_pooling_param(level, height, width, method):
    """The PoolingParameter of pyramid level `level` for a height x width bottom."""
    bins = 2 ** level
    param = caffe_pb2.PoolingParameter()
    param.pool = method
    for axis, size in (("h", height), ("w", width)):
        kernel = -(-size // bins)
        pad = (kernel * bins - size + 1) // 2
        setattr(param, f"kernel_{axis}", kernel)
        setattr(param, f"stride_{axis}", kernel)
        setattr(param, f"pad_{axis}", pad)
    return param


@register_layer
class SPPLayer(Layer):
    type = "SPP"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.spp_param
        self.check(p.pyramid_height > 0, "spp_param.pyramid_height must be positive")
        self.check(p.pool in _METHODS, f"Unknown pooling method {p.pool}.")
        self.height = p.pyramid_height
        self.method = _METHODS[p.pool]
        self._built_for = None

    def _build(self, bottom):
        """(Re)create one Pooling layer per level for this bottom shape."""
        _, _, height, width = bottom.shape
        self.check(height > 0 and width > 0, "Input dimensions cannot be zero.")
        self.levels = []
        for level in range(self.height):
            param = caffe_pb2.LayerParameter(name=f"{self.name}_level{level}", type="Pooling")
            param.pooling_param.CopyFrom(level_pooling_param(level, height, width, self.method))
            layer = PoolingLayer(param, phase=self.phase)
            pooled = Blob((), dtype=bottom.dtype, xp=bottom.xp)
            try:
                layer.set_up([bottom], [pooled])
            except CaffeError as exc:
                raise self.error(f"pyramid level {level} on bottom {bottom.shape}: {exc}") from None
            self.levels.append((layer, pooled))
        self._built_for = bottom.shape

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == 4, "Input must have 4 axes, corresponding to "
                   f"(num, channels, height, width); bottom shape is {bottom[0].shape}")
        if self._built_for != bottom[0].shape:
            self._build(bottom[0])
        else:
            for layer, pooled in self.levels:
                layer.reshape(bottom, [pooled])
        if self.height == 1:
            top[0].reshape(self.levels[0][1].shape)
        else:
            width = sum(pooled.count_range(1) for _, pooled in self.levels)
            top[0].reshape(bottom[0].shape[0], width)

    def _spans(self):
        start = 0
        for layer, pooled in self.levels:
            size = pooled.count_range(1)
            yield layer, pooled, slice(start, start + size)
            start += size

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        flat = top[0].data.reshape(num, -1)
        for layer, pooled, span in self._spans():
            layer.forward(bottom, [pooled])
            flat[:, span] = pooled.data.reshape(num, -1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        flat = top[0].diff.reshape(num, -1)
        # Each level writes its gradient into a scratch blob that reads the bottom's data.
        scratch = Blob(bottom[0].shape, dtype=bottom[0].dtype, xp=bottom[0].xp)
        scratch.share_data(bottom[0])
        total = None
        for layer, pooled, span in self._spans():
            pooled.diff[...] = flat[:, span].reshape(pooled.shape)
            layer.backward([pooled], [True], [scratch])
            if total is None:
                total = scratch.diff.copy()
            else:
                total += scratch.diff
        bottom[0].diff[...] = total
