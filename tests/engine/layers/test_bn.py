"""The BN type (bn.py): bn_param's fields choose SegNet's or PSPNet's layer."""

import numpy as np
import pytest
from layer_check import build_layer

from engine import caffe_pb2
from engine.errors import LayerError
from engine.layers import layer_class
from engine.layers.pspnet import PSPNetBNLayer
from engine.layers.segnet import SegNetBNLayer

X = np.random.default_rng(2).standard_normal((2, 3, 4, 4))


@pytest.mark.parametrize("bn_param, variant", [
    ("", SegNetBNLayer),
    ("bn_param { bn_mode: INFERENCE }", SegNetBNLayer),
    ('bn_param { scale_filler { type: "constant" value: 1 } }', SegNetBNLayer),
    ("bn_param { frozen: false }", PSPNetBNLayer),
    ("bn_param { momentum: 0.95 }", PSPNetBNLayer),
    ('bn_param { slope_filler { type: "constant" value: 1 } bias_filler { type: "constant" } }', PSPNetBNLayer),
    ("bn_param { engine: CAFFE }", PSPNetBNLayer),
])
def test_the_fields_choose_the_fork(bn_param, variant):
    layer, _, _ = build_layer(f'type: "BN" {bn_param}', [X])
    assert type(layer) is variant and layer.type == "BN" and layer_class("BN").type == "BN"
    assert len(layer.blobs) == (2 if variant is SegNetBNLayer else 4)


def test_fields_of_both_forks_are_an_error():
    with pytest.raises(LayerError, match=r"layer 'layer' \(BN\): bn_param mixes SegNet's fields \(bn_mode\) "
                                         r"with PSPNet's \(eps, frozen\)"):
        build_layer('type: "BN" bn_param { bn_mode: INFERENCE frozen: true eps: 1e-3 }', [X])


def test_a_bottom_that_changes_channels_is_an_error():
    for text in ('type: "BN"', 'type: "BN" bn_param { frozen: true }'):
        layer, bottom, top = build_layer(text, [X])
        bottom[0].reshape((2, 5, 4, 4))
        with pytest.raises(LayerError, match="bottom has 5 channels"):
            layer.reshape(bottom, top)


def test_both_forks_read_from_a_binary_layer_parameter():
    param = caffe_pb2.LayerParameter(name="bn", type="BN")
    param.bn_param.bn_mode = caffe_pb2.BNParameter.INFERENCE
    param.bn_param.scale_filler.value = 2
    again = caffe_pb2.LayerParameter.FromString(param.SerializeToString())
    assert again.bn_param.bn_mode == caffe_pb2.BNParameter.INFERENCE and again.bn_param.scale_filler.value == 2
