"""The BN type, shared by two forks with different layers under one name.

SegNet (alexgkendall/caffe-segnet, and ENet's caffe-enet) and PSPNet
(hszhao/PSPNet, from yjxiong/caffe, also in wy1iu/LargeMargin_Softmax_Loss)
both register "BN" and both read `bn_param`, with different fields and blobs.
Our schema merges the two messages; the fields a layer sets choose the fork:
any of slope_filler, bias_filler, momentum, eps, frozen or engine means PSPNet
(engine/layers/pspnet.py), otherwise SegNet (engine/layers/segnet.py).
"""

from collections import namedtuple

from ..errors import LayerError
from .base import Layer, register_layer

_Named = namedtuple("_Named", "name type")

SEGNET_FIELDS = ("bn_mode", "scale_filler", "shift_filler")
PSPNET_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine")


def channel_view(array):
    """(num, channels, spatial) view: statistics run over axes 0 and 2."""
    return array.reshape(array.shape[0], array.shape[1], -1)


@register_layer
class BNLayer(Layer):
    """Base of both forks' BN; constructing it builds the fork's variant."""

    type = "BN"
    exact_num_bottom_blobs = 1

    def __new__(cls, param, phase=None):
        if cls is not BNLayer:
            return super().__new__(cls)
        from .pspnet import PSPNetBNLayer
        from .segnet import SegNetBNLayer

        p = param.bn_param
        segnet = [name for name in SEGNET_FIELDS if p.HasField(name)]
        pspnet = [name for name in PSPNET_FIELDS if p.HasField(name)]
        if segnet and pspnet:
            raise LayerError(_Named(param.name, cls.type),
                             f"bn_param mixes SegNet's fields ({', '.join(segnet)}) with PSPNet's "
                             f"({', '.join(pspnet)}); a BN layer follows one fork")
        return super().__new__(PSPNetBNLayer if pspnet else SegNetBNLayer)

    def check_channels(self, bottom):
        shape = bottom[0].shape
        self.check(len(shape) >= 2, f"needs a bottom with a channel axis (num, channels, ...); got {shape}")
        self.check(shape[1] == self.channels,
                   f"bottom has {shape[1]} channels (shape {shape}), the layer was set up for {self.channels}")
        self.check(bottom[0].count > 0, f"cannot normalize an empty bottom {shape}")

