"""ShuffleNet's ShuffleChannel (shufflenet.py): the fork's loop, OpenCV's dnn, gradient, errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward
from opencv_reference import opencv_forward

from engine.errors import LayerError

RNG = np.random.default_rng(5)
X = RNG.standard_normal((2, 12, 3, 4))


def shuffle_loop(x, group):
    """The fork's Resize_cpu: input channel i * columns + j goes to output channel j * group + i."""
    columns = x.shape[1] // group
    top = np.empty_like(x)
    for n in range(x.shape[0]):
        for i in range(group):
            for j in range(columns):
                top[n, j * group + i] = x[n, i * columns + j]
    return top


@pytest.mark.parametrize("group", [1, 2, 3, 4, 12])
def test_forward_matches_the_fork_and_opencv(group):
    text = f'type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}'
    ours = forward(*build_layer(text, [X]))[0]
    np.testing.assert_array_equal(ours, shuffle_loop(X, group))
    net = 'input: "data" input_shape { dim: 2 dim: 12 dim: 3 dim: 4 }\n' \
          f'layer {{ name: "s" type: "ShuffleChannel" bottom: "data" top: "s" ' \
          f'shuffle_channel_param {{ group: {group} }} }}'
    (reference,) = opencv_forward(net, {"data": X}, ["s"])
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("group", [3, 4])
def test_gradient_and_backward_is_the_inverse(group):
    text = f'type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}'
    check_gradient(text, [X])
    layer, bottom, top = build_layer(text, [X])
    forward(layer, bottom, top)
    top[0].diff[...] = top[0].data
    layer.run_backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, X)


def test_in_place():
    layer, bottom, _ = build_layer('type: "ShuffleChannel" shuffle_channel_param { group: 3 }', [X])
    layer.run_forward(bottom, bottom)
    np.testing.assert_array_equal(bottom[0].data, shuffle_loop(X, 3))


@pytest.mark.parametrize("text, message", [
    ('shuffle_channel_param { group: 5 }', "12 channels do not split into 5 groups"),
    ('shuffle_channel_param { group: 0 }', "group must be greater than 0"),
])
def test_bad_group(text, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "ShuffleChannel" {text}', [X])


def test_on_both_devices(mode):
    from engine.backend import array_module, to_host

    layer, bottom, top = build_layer('type: "ShuffleChannel" shuffle_channel_param { group: 4 }', [X],
                                     xp=array_module())
    np.testing.assert_array_equal(to_host(forward(layer, bottom, top)[0]), shuffle_loop(X, 4))
