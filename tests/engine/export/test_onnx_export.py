"""ONNX export (engine/export): every zoo net and every convertible layer type, run in ONNX
Runtime, agree with the engine on every blob within 1e-4 relative error; layers and nets
with no ONNX form are one-line errors naming them."""

import numpy as np
import pytest

from engine import formats
from engine.errors import CaffeError
from engine.export import onnx_export
from engine.export.onnx_graph import CONVERTERS, ExportError
from engine.net import TEST, Net

import onnx_check
from paths import ROOT

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# Spatial sizes that keep each zoo net's test short (None: the deploy net's own). The nets with
# InnerProduct heads get smaller weights with smaller inputs; global pooling takes any size.
ZOO_SIZES = {"lenet": None, "cifar10_quick": None, "vgg_cifar": None, "alexnet": 99, "caffenet": 99, "zfnet": 64,
             "vgg16": 32, "googlenet": 64, "nin": 96, "resnet18": 64, "resnet50": 64, "mobilenet_v1": 64,
             "mobilenet_v2": 64, "densenet121": 64, "resnext50_32x4d": 64, "shufflenet_v2_1x": 64,
             "se_resnet50": 64}
ZOO = sorted(p.parent.name for p in (ROOT / "nets").glob("*/deploy.prototxt"))


def test_every_zoo_classifier_is_listed():
    assert set(ZOO) - set(ZOO_SIZES) == {"ssd_shapes"}


@pytest.mark.parametrize("name", sorted(ZOO_SIZES))
def test_zoo_net_matches_onnxruntime(name):
    net = onnx_check.build(ROOT / "nets" / name / "deploy.prototxt", ZOO_SIZES[name])
    feeds = onnx_check.prepare(net)
    model, errors = onnx_check.export_and_check(net, feeds)
    assert set(net.outputs) <= set(errors)
    assert model.opset_import[0].version == onnx_export.DEFAULT_OPSET


def test_net_on_either_device_exports(mode):
    """The converters read weights and shape-only results (PriorBox) from host copies, so a net
    built in GPU mode exports the same model."""
    net = onnx_check.build(ROOT / "nets" / "ssd_shapes" / "deploy.prototxt")
    feeds = onnx_check.prepare(net)
    onnx_check.export_and_check(net, feeds, outputs=net.bottom_names["detection_out"])
    net = onnx_check.build(ROOT / "nets" / "mobilenet_v2" / "deploy.prototxt", 32)
    onnx_check.export_and_check(net, onnx_check.prepare(net))


def test_ssd_exports_up_to_detection_output():
    """DetectionOutput is refused, naming file, line and layer; the blobs it reads export."""
    path = ROOT / "nets" / "ssd_shapes" / "deploy.prototxt"
    net = onnx_check.build(path)
    feeds = onnx_check.prepare(net)
    with pytest.raises(ExportError) as error:
        onnx_export.export_net(net)
    message = str(error.value)
    line = formats.locate_layer(path, "detection_out")
    assert message.startswith(f"{path}:{line}: layer 'detection_out' (DetectionOutput): ") and "\n" not in message
    assert "--outputs" in message
    heads = net.bottom_names["detection_out"]
    model = onnx_export.export_net(net, outputs=heads)
    assert [o.name for o in model.graph.output] == heads
    assert not any(node.name.startswith("node:detection_out") for node in model.graph.node)
    onnx_check.check_agreement(net, model, feeds)
    # every blob before it, PriorBox's constant, Permute, Flatten, Concat, Reshape and Softmax included
    before = [name for name in net.blobs if name != "detection_out"]
    onnx_check.export_and_check(net, feeds, outputs=before)


# Single layers (or short chains) on Input blobs: (id, inputs {name: shape}, layers text).
CASES = [
    ("pool_max_ceil_pad", {"x": (2, 3, 9, 10)},
     'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }'),
    ("pool_max_last_window_dropped", {"x": (1, 2, 5, 5)},
     'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }'),
    ("pool_ave_ceil_pad", {"x": (2, 3, 9, 10)},
     'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride: 2 pad_h: 1 pad_w: 1 } }'),
    ("pool_ave_overhang", {"x": (1, 2, 8, 9)},
     'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }'),
    ("pool_ave_floor", {"x": (1, 3, 8, 7)},
     'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR } }'),
    ("pool_global", {"x": (2, 4, 5, 6)},
     'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE global_pooling: true } }'),
    ("spp", {"x": (2, 3, 7, 9)},
     'layer { name: "s" type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 3 pool: MAX } }'),
    ("lrn_across", {"x": (2, 7, 5, 5)},
     'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 } }'),
    ("lrn_within", {"x": (2, 3, 6, 5)},
     'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }'),
    ("softmax_axis", {"x": (2, 3, 4, 5)},
     'layer { name: "s" type: "Softmax" bottom: "x" top: "y" softmax_param { axis: 2 } }'),
    ("eltwise_sum_coeffs", {"a": (2, 3, 4), "b": (2, 3, 4), "c": (2, 3, 4)},
     'layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 } }'),
    ("eltwise_prod_max", {"a": (2, 5), "b": (2, 5), "c": (2, 5)},
     'layer { name: "p" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "y" eltwise_param { operation: PROD } }'
     'layer { name: "m" type: "Eltwise" bottom: "a" bottom: "b" top: "z" eltwise_param { operation: MAX } }'),
    ("batchnorm_scale_factor", {"x": (2, 3, 4, 5)},
     'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { use_global_stats: true eps: 0.001 } }'),
    ("batchnorm_2d", {"x": (4, 6)},
     'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { use_global_stats: true } }'),
    ("batchnorm_batch_statistics", {"x": (3, 4, 5, 2)},
     'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { use_global_stats: false } }'),
    ("scale_bias_in_place", {"x": (2, 3, 4, 5)},
     'layer { name: "s" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }'
     'layer { name: "b" type: "Bias" bottom: "x" top: "x" bias_param { axis: 1 num_axes: 2 } }'),
    ("scale_two_bottoms_axis", {"x": (2, 3, 4, 5), "s": (3, 4)},
     'layer { name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y" scale_param { axis: 1 } }'),
    ("crop", {"x": (2, 3, 10, 9), "ref": (2, 3, 6, 5)},
     'layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "y" crop_param { axis: 2 offset: 3 offset: 1 } }'),
    ("deconvolution", {"x": (2, 4, 5, 6)},
     'layer { name: "d" type: "Deconvolution" bottom: "x" top: "y" convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }'),
    ("convolution_dilated_grouped", {"x": (2, 4, 9, 8)},
     'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 6 '
     'kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 1 dilation: 2 group: 2 } }'),
    ("depthwise_relu6", {"x": (2, 4, 7, 7)},
     'layer { name: "c" type: "ConvolutionDepthwise" bottom: "x" top: "y" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }'
     'layer { name: "r" type: "ReLU6" bottom: "y" top: "y" }'
     'layer { name: "d" type: "DepthwiseConvolution" bottom: "x" top: "z" convolution_param { num_output: 4 group: 4 kernel_size: 3 pad: 1 } }'),
    ("im2col", {"x": (2, 3, 7, 6)},
     'layer { name: "i" type: "Im2col" bottom: "x" top: "y" convolution_param { kernel_h: 3 kernel_w: 2 '
     'stride: 2 pad: 1 dilation: 2 } }'),
    ("inner_product_axis_transpose", {"x": (2, 3, 4)},
     'layer { name: "i" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 5 axis: 2 transpose: true } }'),
    ("neurons", {"x": (2, 3, 4)},
     'layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { negative_slope: 0.1 } }'
     'layer { name: "p" type: "PReLU" bottom: "x" top: "p" }'
     'layer { name: "e" type: "ELU" bottom: "x" top: "e" elu_param { alpha: 0.7 } }'
     'layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" }'
     'layer { name: "t" type: "TanH" bottom: "x" top: "t" }'
     'layer { name: "a" type: "AbsVal" bottom: "x" top: "a" }'
     'layer { name: "b" type: "BNLL" bottom: "x" top: "b" }'
     'layer { name: "w" type: "Swish" bottom: "x" top: "w" swish_param { beta: 1.5 } }'
     'layer { name: "c" type: "Clip" bottom: "x" top: "c" clip_param { min: -0.5 max: 0.7 } }'
     'layer { name: "h" type: "Threshold" bottom: "x" top: "h" threshold_param { threshold: 0.2 } }'
     'layer { name: "o" type: "Power" bottom: "a" top: "o" power_param { power: 1.5 scale: 2 shift: 0.5 } }'
     'layer { name: "x" type: "Exp" bottom: "x" top: "ex" exp_param { base: 2 scale: 0.5 shift: 0.1 } }'
     'layer { name: "l" type: "Log" bottom: "o" top: "l" log_param { base: 10 scale: 3 shift: 1 } }'
     'layer { name: "r6" type: "ReLU6" bottom: "x" top: "r6" }'),
    ("mvn_reduction_argmax", {"x": (2, 3, 4, 5)},
     'layer { name: "m" type: "MVN" bottom: "x" top: "m" mvn_param { across_channels: true } }'
     'layer { name: "r" type: "Reduction" bottom: "x" top: "r" reduction_param { operation: SUMSQ axis: 2 coeff: 0.5 } }'
     'layer { name: "a" type: "ArgMax" bottom: "x" top: "a" argmax_param { top_k: 2 out_max_val: true } }'
     'layer { name: "b" type: "ArgMax" bottom: "x" top: "b" argmax_param { axis: 1 } }'),
    ("shape_layers", {"x": (2, 6, 4, 5)},
     'layer { name: "r" type: "Reshape" bottom: "x" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 10 } } }'
     'layer { name: "f" type: "Flatten" bottom: "x" top: "f" flatten_param { axis: 2 } }'
     'layer { name: "s" type: "Slice" bottom: "x" top: "s1" top: "s2" top: "s3" slice_param { axis: 1 slice_point: 1 slice_point: 4 } }'
     'layer { name: "c" type: "Concat" bottom: "s3" bottom: "s1" top: "c" }'
     'layer { name: "t" type: "Tile" bottom: "x" top: "t" tile_param { axis: 2 tiles: 3 } }'
     'layer { name: "d" type: "Dropout" bottom: "t" top: "t" dropout_param { dropout_ratio: 0.3 } }'),
    ("interp_zoom", {"x": (1, 3, 5, 6)},
     'layer { name: "i" type: "Interp" bottom: "x" top: "y" interp_param { zoom_factor: 3 } }'),
    ("interp_shrink_crop", {"x": (1, 2, 13, 11)},
     'layer { name: "i" type: "Interp" bottom: "x" top: "y" interp_param { shrink_factor: 2 pad_beg: -1 pad_end: -2 } }'),
    ("interp_size", {"x": (1, 2, 7, 9)},
     'layer { name: "i" type: "Interp" bottom: "x" top: "y" interp_param { height: 12 width: 5 } }'),
    ("interp_to_one_row", {"x": (1, 2, 5, 4)},
     'layer { name: "i" type: "Interp" bottom: "x" top: "y" interp_param { height: 1 width: 3 } }'),
    ("segnet_upsample_mask", {"x": (2, 3, 8, 6)},
     'layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }'
     'layer { name: "u" type: "Upsample" bottom: "p" bottom: "mask" top: "y" upsample_param { scale: 2 } }'),
    ("segnet_upsample_odd", {"x": (1, 2, 7, 5)},
     'layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }'
     'layer { name: "u" type: "Upsample" bottom: "p" bottom: "mask" top: "y" upsample_param { scale: 2 upsample_h: 7 upsample_w: 5 } }'),
    ("segnet_bn_inference", {"x": (2, 3, 4, 5)},
     'layer { name: "b" type: "BN" bottom: "x" top: "y" bn_param { bn_mode: INFERENCE } }'),
    ("segnet_bn_learn", {"x": (2, 3, 4, 5)},
     'layer { name: "b" type: "BN" bottom: "x" top: "y" bn_param { bn_mode: LEARN } }'),
    ("pspnet_bn", {"x": (2, 3, 4, 5)},
     'layer { name: "b" type: "BN" bottom: "x" top: "y" bn_param { eps: 0.001 momentum: 0.95 } }'),
    ("shuffle_channel", {"x": (2, 6, 3, 4)},
     'layer { name: "s" type: "ShuffleChannel" bottom: "x" top: "y" shuffle_channel_param { group: 3 } }'),
    ("axpy", {"a": (2, 4, 1, 1), "x": (2, 4, 3, 5), "b": (2, 4, 3, 5)},
     'layer { name: "s" type: "Axpy" bottom: "a" bottom: "x" bottom: "b" top: "y" }'),
    ("permute_normalize", {"x": (2, 4, 3, 5)},
     'layer { name: "n" type: "Normalize" bottom: "x" top: "n" norm_param { across_spatial: false channel_shared: false } }'
     'layer { name: "m" type: "Normalize" bottom: "x" top: "m" norm_param { across_spatial: true channel_shared: true } }'
     'layer { name: "p" type: "Permute" bottom: "n" top: "p" permute_param { order: 0 order: 2 order: 3 order: 1 } }'),
    ("parsenet_unpooling", {"x": (2, 3, 4, 5), "like": (2, 3, 9, 11)},
     'layer { name: "f" type: "UnPooling" bottom: "x" top: "f" unpooling_param { unpool: FIXED out_kernel_size: 3 '
     'out_stride: 2 out_pad: 1 } }'
     'layer { name: "r" type: "UnPooling" bottom: "x" top: "r" unpooling_param { unpool: REP out_kernel_h: 3 '
     'out_kernel_w: 2 out_stride_h: 2 out_stride_w: 1 } }'
     'layer { name: "d" type: "UnPooling" bottom: "x" top: "d" unpooling_param { unpool: DIV out_kernel_size: 4 '
     'out_stride: 2 out_pad: 1 } }'
     'layer { name: "s" type: "UnPooling" bottom: "x" bottom: "like" top: "s" unpooling_param { unpool: DIV out_kernel_size: 2 } }'),
    ("parsenet_output_and_bins", {"x": (2, 5, 9, 8)},
     'layer { name: "o" type: "ParseOutput" bottom: "x" top: "label" top: "score" }'
     'layer { name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: AVE bin_size: 3 } }'
     'layer { name: "q" type: "Pooling" bottom: "x" top: "q" pooling_param { pool: MAX bin_h: 2 bin_w: 3 } }'),
    ("priorbox", {"f": (1, 8, 3, 4), "img": (1, 3, 30, 40)},
     'layer { name: "p" type: "PriorBox" bottom: "f" bottom: "img" top: "y" prior_box_param { min_size: 10 '
     'max_size: 20 aspect_ratio: 2 flip: true clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }'),
]


def _case_net(inputs, text):
    shapes = "".join(f'layer {{ name: "in_{name}" type: "Input" top: "{name}" input_param {{ shape {{ '
                     + " ".join(f"dim: {d}" for d in shape) + " } } }"
                     for name, shape in inputs.items())
    param = formats.parse_text(shapes + text, formats.caffe_pb2.NetParameter(), "<case>")
    return Net(param, phase=TEST)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_layer_matches_onnxruntime(case):
    _, inputs, text = case
    net = _case_net(inputs, text)
    feeds = onnx_check.prepare(net, seed=3)
    if "x" in feeds and any(layer.type in ("Log", "Power") for layer in net.layers):
        feeds = {name: np.abs(value) + 0.1 for name, value in feeds.items()}
    onnx_check.export_and_check(net, feeds)


def test_layer_types_with_converters_are_tested():
    """Every converter is exercised by a case above or a zoo net (ROIPooling, Embed, BatchReindex,
    Parameter and Silence below)."""
    tested = {layer.split('type: "')[1].split('"')[0] for case in CASES for layer in case[2].split("layer {")[1:]}
    tested |= {"Input", "Convolution", "ReLU", "Split", "Concat", "InnerProduct", "Softmax", "Dropout", "Scale",
               "ROIPooling", "Embed", "BatchReindex", "Parameter", "Silence"}
    assert set(CONVERTERS) <= tested, sorted(set(CONVERTERS) - tested)


def test_ties_pick_the_index_caffe_picks():
    """Equal scores: Caffe's ArgMax keeps the last index, ParseNet's ParseOutput the first."""
    net = _case_net({"x": (2, 6, 5, 4)}, 'layer { name: "a" type: "ArgMax" bottom: "x" top: "a" '
                                         'argmax_param { axis: 1 } }'
                                         'layer { name: "o" type: "ParseOutput" bottom: "x" top: "o" }')
    feeds = {"x": np.random.default_rng(5).integers(0, 3, (2, 6, 5, 4)).astype(np.float32)}
    _, errors = onnx_check.export_and_check(net, feeds, outputs=["a", "o"])
    assert errors == {"a": 0.0, "o": 0.0}


def test_roi_pooling_embed_batch_reindex_parameter():
    net = _case_net({"x": (2, 3, 12, 10), "rois": (4, 5), "ids": (2, 3), "order": (3,)},
                    'layer { name: "r" type: "ROIPooling" bottom: "x" bottom: "rois" top: "r" '
                    'roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 } }'
                    'layer { name: "e" type: "Embed" bottom: "ids" top: "e" '
                    'embed_param { num_output: 4 input_dim: 7 bias_term: true } }'
                    'layer { name: "b" type: "BatchReindex" bottom: "x" bottom: "order" top: "b" }'
                    'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }'
                    'layer { name: "s" type: "Silence" bottom: "p" }')
    feeds = onnx_check.prepare(net, seed=4)
    feeds["rois"] = np.array([[0, 2, 3, 15, 20], [1, 0, 0, 19, 23], [1, 5.4, 7.6, 6.2, 9.5], [0, 10, 4, 13, 5]],
                             np.float32)
    feeds["ids"] = np.array([[0, 6, 3], [2, 2, 5]], np.float32)
    feeds["order"] = np.array([1, 0, 1], np.float32)
    onnx_check.export_and_check(net, feeds, outputs=["r", "e", "b", "p"])


def test_opset_17_uses_reduce_attributes():
    """Before opset 18 the Reduce* axes are attributes; the model still agrees."""
    net = _case_net({"x": (2, 3, 4, 5)}, 'layer { name: "m" type: "MVN" bottom: "x" top: "y" }'
                                         'layer { name: "b" type: "BatchNorm" bottom: "y" top: "z" '
                                         'batch_norm_param { use_global_stats: false } }')
    feeds = onnx_check.prepare(net)
    model, _ = onnx_check.export_and_check(net, feeds, opset=onnx_export.MIN_OPSET)
    assert model.opset_import[0].version == onnx_export.MIN_OPSET
    with pytest.raises(ExportError, match="opset 16 is not supported"):
        onnx_export.export_net(net, 16)


def test_layer_without_onnx_form_is_one_line_error(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\n'
                    'layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 8 dim: 4 dim: 4 } } }\n'
                    'layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 1 dim: 5 } } }\n'
                    'layer {\n  name: "psroi"\n  type: "PSROIPooling"\n  bottom: "x"\n  bottom: "rois"\n  top: "y"\n'
                    '  psroi_pooling_param { spatial_scale: 1 output_dim: 2 group_size: 2 }\n}\n')
    net = onnx_export.build_net(path)
    with pytest.raises(ExportError) as error:
        onnx_export.export_net(net, source=str(path))
    assert str(error.value) == (f"{path}:5: layer 'psroi' (PSROIPooling): ONNX has no position-sensitive "
                                "ROI pooling")
    with pytest.raises(ExportError, match=r"no blob named 'nope'"):
        onnx_export.export_net(net, outputs=["nope"])


def test_stochastic_pooling_and_data_layers_are_refused(tmp_path):
    net = _case_net({"x": (1, 2, 4, 4)}, 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
                                         'pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }')
    with pytest.raises(ExportError, match=r"^layer 'p' \(Pooling\): STOCHASTIC pooling has no ONNX equivalent$"):
        onnx_export.export_net(net)
    path = tmp_path / "train.prototxt"
    path.write_text('layer {\n  name: "d"\n  type: "DummyData"\n  top: "x"\n'
                    '  dummy_data_param { shape { dim: 1 dim: 3 } }\n}\n')
    with pytest.raises(CaffeError, match=rf"^{path}:2: layer 'd' \(DummyData\): a data layer has no ONNX form"):
        onnx_export.build_net(path)
