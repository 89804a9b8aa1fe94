"""EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss,
InfogainLoss and ContrastiveLoss: hand-computed values, normalization, gradients."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine import caffe_pb2, formats
from engine.errors import LayerError

RNG = np.random.default_rng(5)


def loss_of(text, bottoms, num_tops=1):
    layer, bottom, top = build_layer(text, bottoms, num_tops=num_tops)
    return layer, bottom, top, forward(layer, bottom, top)


def backward_with_weight(layer, bottom, top, weight, propagate=None):
    top[0].diff[...] = weight
    layer.run_backward(top, propagate or [True] + [False] * (len(bottom) - 1), bottom)
    return bottom[0].diff.copy()


def away_from(values, kinks, gap=0.15):
    """Shift values that sit within `gap` of a kink, so finite differences stay on one side."""
    values = values.copy()
    for kink in kinks:
        close = np.abs(values - kink) < gap
        values[close] += 2 * gap
    return values


# -- EuclideanLoss ----------------------------------------------------------------------

def test_euclidean_value_and_both_gradients():
    a, b = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3, 1, 1))
    layer, bottom, top, (loss,) = loss_of('type: "EuclideanLoss"', [a, b])
    expected = ((a - b.reshape(4, 3)) ** 2).sum() / 4 / 2
    np.testing.assert_allclose(loss, expected)
    top[0].diff[...] = 3.0
    layer.run_backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[0].diff, 3.0 * (a - b.reshape(4, 3)) / 4)
    np.testing.assert_allclose(bottom[1].diff.reshape(4, 3), -3.0 * (a - b.reshape(4, 3)) / 4)
    assert layer.allow_force_backward(1)


def test_euclidean_gradient_and_dimension_check():
    check_gradient('type: "EuclideanLoss"', [RNG.standard_normal((3, 2, 2)), RNG.standard_normal((3, 4))])
    with pytest.raises(LayerError, match="Inputs must have the same dimension"):
        build_layer('type: "EuclideanLoss"', [np.ones((3, 4)), np.ones((3, 5))])


# -- SigmoidCrossEntropyLoss ------------------------------------------------------------

def sce_terms(x, t):
    s = 1 / (1 + np.exp(-x))
    return -(t * np.log(s) + (1 - t) * np.log(1 - s))


@pytest.mark.parametrize("loss_param, divisor", [
    ("", lambda n, c, valid: n),  # BATCH_SIZE is this layer's default
    ("normalization: FULL", lambda n, c, valid: n * c),
    ("normalization: VALID", lambda n, c, valid: valid),
    ("normalization: NONE", lambda n, c, valid: 1),
    ("normalize: true", lambda n, c, valid: valid),
    ("normalize: false", lambda n, c, valid: n),
])
def test_sigmoid_cross_entropy_normalization_and_ignore(loss_param, divisor):
    x = RNG.standard_normal((4, 5)) * 3
    t = (RNG.random((4, 5)) > 0.5).astype(float)
    t[0, :3] = -1  # ignored
    text = f'type: "SigmoidCrossEntropyLoss" loss_param {{ ignore_label: -1 {loss_param} }}'
    layer, bottom, top, (loss,) = loss_of(text, [x, t])
    valid = t != -1
    norm = max(1.0, divisor(4, 5, valid.sum()))
    np.testing.assert_allclose(loss, sce_terms(x, t)[valid].sum() / norm, rtol=1e-10)
    dx = backward_with_weight(layer, bottom, top, 2.0)
    expected = 2.0 * (1 / (1 + np.exp(-x)) - t) * valid / norm
    np.testing.assert_allclose(dx, expected, rtol=1e-10, atol=1e-14)


def test_sigmoid_cross_entropy_is_stable_for_large_inputs():
    x = np.array([[800.0, -800.0]])
    _, _, _, (loss,) = loss_of('type: "SigmoidCrossEntropyLoss"', [x, np.array([[1.0, 0.0]])])
    assert loss == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("loss_param", ["", "ignore_label: 1 normalization: VALID"])
def test_sigmoid_cross_entropy_gradient(loss_param):
    x, t = RNG.standard_normal((3, 2, 2)), RNG.random((3, 4))
    if loss_param:
        t[0, 0] = 1
    check_gradient(f'type: "SigmoidCrossEntropyLoss" loss_param {{ {loss_param} }}', [x, t], bottoms_checked=[0])


def test_label_gradient_is_refused():
    layer, bottom, top, _ = loss_of('type: "SigmoidCrossEntropyLoss"', [np.zeros((2, 2)), np.zeros((2, 2))])
    assert not layer.allow_force_backward(1)
    with pytest.raises(LayerError, match="label"):
        layer.run_backward(top, [True, True], bottom)


# -- HingeLoss --------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_value_and_gradient_by_hand(norm):
    x = np.array([[0.5, -2.0, 0.2], [2.0, 0.3, -0.5]])
    labels = np.array([0, 2])
    layer, bottom, top, (loss,) = loss_of(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [x, labels])
    # Row 0: label 0 -> max(0, 1-0.5)=0.5; others max(0, 1+x): 0, 1.2. Row 1: 3, 1.3, label 2 -> 1.5.
    margins = np.array([[0.5, 0.0, 1.2], [3.0, 1.3, 1.5]])
    expected = (margins ** 2).sum() / 2 if norm == "L2" else margins.sum() / 2
    np.testing.assert_allclose(loss, expected)
    dx = backward_with_weight(layer, bottom, top, 1.0)
    signs = np.array([[-1, 1, 1], [1, 1, -1]])
    grad = 2 * margins * signs / 2 if norm == "L2" else np.sign(margins) * signs / 2
    np.testing.assert_allclose(dx, grad)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_gradient(norm):
    x = away_from(RNG.standard_normal((4, 3, 1, 2)), [-1.0, 1.0])
    labels = RNG.integers(0, 6, size=4)
    check_gradient(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [x, labels], bottoms_checked=[0])


def test_hinge_label_out_of_range():
    with pytest.raises(LayerError, match="label values"):
        loss_of('type: "HingeLoss"', [np.zeros((2, 3)), np.array([0, 3])])


# -- MultinomialLogisticLoss ------------------------------------------------------------

def test_multinomial_logistic_value_gradient_and_threshold():
    p = np.array([[0.2, 0.5, 0.3], [0.0, 0.1, 0.9]])
    labels = np.array([1, 0])
    layer, bottom, top, (loss,) = loss_of('type: "MultinomialLogisticLoss"', [p, labels])
    np.testing.assert_allclose(loss, -(np.log(0.5) + np.log(1e-20)) / 2)
    dx = backward_with_weight(layer, bottom, top, 1.0)
    np.testing.assert_allclose(dx, [[0, -1 / 0.5 / 2, 0], [-1 / 1e-20 / 2, 0, 0]])


def test_multinomial_logistic_gradient():
    p = RNG.uniform(0.1, 1.0, size=(4, 5))
    check_gradient('type: "MultinomialLogisticLoss"', [p, RNG.integers(0, 5, size=(4, 1, 1, 1))],
                   bottoms_checked=[0])


# -- InfogainLoss -----------------------------------------------------------------------

def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_infogain_with_identity_equals_softmax_loss():
    x, labels = RNG.standard_normal((4, 3)), np.array([0, 2, 1, 1])
    _, _, _, (infogain, prob) = loss_of('type: "InfogainLoss"', [x, labels, np.eye(3)], num_tops=2)
    _, _, _, (softmax_loss,) = loss_of('type: "SoftmaxWithLoss"', [x, labels])
    np.testing.assert_allclose(infogain, softmax_loss)
    np.testing.assert_allclose(prob, softmax(x, 1))


def test_infogain_matrix_from_source_axis_and_ignore(tmp_path):
    h = RNG.uniform(0, 1, size=(3, 3))
    path = tmp_path / "H.binaryproto"
    formats.write_binary(path, formats.array_to_blobproto(h.reshape(1, 1, 3, 3)))
    x = RNG.standard_normal((2, 2, 3))  # classes on axis 2
    labels = np.array([[0, 2], [-1, 1]])
    text = (f'type: "InfogainLoss" infogain_loss_param {{ source: "{path}" axis: 2 }} '
            'loss_param { ignore_label: -1 }')
    layer, bottom, top, (loss,) = loss_of(text, [x, labels])
    h32 = h.astype(np.float32).astype(np.float64)
    prob = softmax(x, 2)
    terms = [-(h32[labels[i, j]] * np.log(prob[i, j])).sum() for i in range(2) for j in range(2) if labels[i, j] >= 0]
    np.testing.assert_allclose(loss, sum(terms) / 3)  # VALID: 3 labels counted
    dx = backward_with_weight(layer, bottom, top, 1.0)
    np.testing.assert_array_equal(dx[1, 0], 0)
    expected = (prob[0, 1] * h32[2].sum() - h32[2]) / 3
    np.testing.assert_allclose(dx[0, 1], expected)


@pytest.mark.parametrize("shape, axis", [((4, 3), 1), ((2, 3, 2), 1), ((2, 2, 3), -1)])
def test_infogain_gradient(shape, axis):
    k = shape[axis]
    outer_inner = int(np.prod(shape)) // k
    labels = RNG.integers(0, k, size=outer_inner).reshape(shape[0], -1)
    h = RNG.uniform(0, 2, size=(k, k))
    check_gradient(f'type: "InfogainLoss" infogain_loss_param {{ axis: {axis} }}',
                   [RNG.standard_normal(shape), labels, h], bottoms_checked=[0])


def test_infogain_needs_a_matrix_and_refuses_its_gradient():
    with pytest.raises(LayerError, match="Infogain matrix source must be specified"):
        build_layer('type: "InfogainLoss"', [np.zeros((2, 3)), np.zeros(2)])
    with pytest.raises(LayerError, match="H must be 3x3"):
        build_layer('type: "InfogainLoss"', [np.zeros((2, 3)), np.zeros(2), np.eye(2)])
    layer, bottom, top, _ = loss_of('type: "InfogainLoss"', [np.zeros((2, 3)), np.zeros(2), np.eye(3)])
    assert not layer.allow_force_backward(2)
    with pytest.raises(LayerError, match="infogain inputs"):
        layer.run_backward(top, [True, False, True], bottom)


# -- ContrastiveLoss --------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_value_by_hand(legacy):
    a = np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 0.0]])
    b = np.array([[0.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    sim = np.array([1, 0, 0])
    text = f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 1.5 legacy_version: {str(legacy).lower()} }}'
    layer, bottom, top, (loss,) = loss_of(text, [a, b, sim])
    # d^2 = 1, 4, 0.25.
    if legacy:
        expected = (1 + max(1.5 - 4, 0) + max(1.5 - 0.25, 0)) / 3 / 2
    else:
        expected = (1 + max(1.5 - 2, 0) ** 2 + max(1.5 - 0.5, 0) ** 2) / 3 / 2
    np.testing.assert_allclose(loss, expected)
    top[0].diff[...] = 1.0
    layer.run_backward(top, [True, True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff[0], [1 / 3, 0])
    np.testing.assert_array_equal(bottom[0].diff[1], [0, 0])  # beyond the margin
    third = -1 / 3 if legacy else -1 / 3 * 1.0 / (0.5 + 1e-4)
    np.testing.assert_allclose(bottom[0].diff[2], [third * 0.5, 0])
    np.testing.assert_allclose(bottom[1].diff, -bottom[0].diff)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_gradient(legacy):
    a, b = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 3, 1, 1))
    sim = np.array([1, 0, 1, 0, 0])
    # A margin far above every distance keeps all dissimilar pairs on one side of the hinge.
    text = f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 30 legacy_version: {str(legacy).lower()} }}'
    check_gradient(text, [a, b, sim], bottoms_checked=[0, 1])


def test_contrastive_shape_checks():
    assert not build_layer('type: "ContrastiveLoss"', [np.ones((2, 3))] * 2 + [np.ones(2)])[0].allow_force_backward(2)
    with pytest.raises(LayerError, match="feature bottoms"):
        build_layer('type: "ContrastiveLoss"', [np.ones((2, 3, 2)), np.ones((2, 3, 2)), np.ones(2)])
    with pytest.raises(LayerError, match="similarity"):
        build_layer('type: "ContrastiveLoss"', [np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 2))])


def test_new_losses_default_to_weight_one():
    for text, bottoms in [('type: "EuclideanLoss"', [np.ones((2, 2))] * 2),
                          ('type: "HingeLoss"', [np.ones((2, 2)), np.zeros(2)])]:
        layer, _, _ = build_layer(text, bottoms, phase=caffe_pb2.TRAIN)
        assert layer.loss_weights == [1.0]


# -- one code path: CuPy gives NumPy's numbers ---------------------------------------------

GPU_CASES = [
    ('type: "EuclideanLoss"', [(4, 3), (4, 3)], [True, True]),
    ('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: 1 normalization: VALID }', [(4, 3), "binary"],
     [True, False]),
    ('type: "HingeLoss" hinge_loss_param { norm: L2 }', [(4, 3), "label"], [True, False]),
    ('type: "MultinomialLogisticLoss"', ["prob", "label"], [True, False]),
    ('type: "InfogainLoss"', [(4, 3), "label", "matrix"], [True, False, False]),
    ('type: "ContrastiveLoss"', [(4, 3), (4, 3), "flags"], [True, True, False]),
]


def gpu_case_arrays(kinds):
    made = {"binary": lambda: (RNG.random((4, 3)) > 0.5).astype(float), "label": lambda: RNG.integers(0, 3, 4),
            "prob": lambda: RNG.uniform(0.1, 1, (4, 3)), "matrix": lambda: RNG.uniform(0, 1, (3, 3)),
            "flags": lambda: np.array([1, 0, 1, 0])}
    return [made[k]() if isinstance(k, str) else RNG.standard_normal(k) for k in kinds]


@pytest.mark.gpu
@pytest.mark.parametrize("text, kinds, down", GPU_CASES)
def test_gpu_matches_cpu(text, kinds, down):
    import cupy

    import engine

    arrays = gpu_case_arrays(kinds)
    host = engine.backend.to_host
    results = []
    for xp in (np, cupy):
        if xp is cupy:
            engine.set_mode_gpu()
        layer, bottom, top = build_layer(text, arrays, xp=xp)
        forward(layer, bottom, top)
        top[0].diff[...] = 1.5
        layer.run_backward(top, down, bottom)
        results.append([host(top[0].data)] + [host(b.diff) for b, d in zip(bottom, down) if d])
    for cpu, gpu in zip(*results, strict=True):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-10, atol=1e-12)
