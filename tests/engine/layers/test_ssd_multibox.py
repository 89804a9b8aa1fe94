"""SSD's MultiBoxLoss: losses worked out by hand from SSD's rules on a small
case (which priors match, which negatives are mined), float64 gradient checks
of the localization and confidence inputs, one-line errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError

GT = [.25, .25, .75, .75]
# Overlaps with GT (exact in binary): 1, 0.5, 1/3, 0.
PRIORS = np.array([[.25, .25, .75, .75], [.25, .25, .75, .5], [.5, .25, 1, .75], [0, 0, .125, .125]])
VAR = np.array([.1, .1, .2, .2])
PRIOR_BLOB = np.stack([PRIORS.reshape(-1), np.tile(VAR, 4)])[None]
LABELS = np.array([[[[0, 1, 0, *GT, 0]]]])
# Background losses: prior 2 small, prior 3 large.
CONF = np.array([[.3, -.2, 1.0, .5, 2.0, 0.0, 0.0, 2.0]])
LOC = np.array([[.1, -.2, .3, .05, -.4, 4.5, .2, 3.0, .5, .5, .5, .5, -.3, .2, .1, .4]])


def text(params="", loss_param=""):
    return (f'type: "MultiBoxLoss" loss_param {{ {loss_param} }} multibox_loss_param {{ num_classes: 2 '
            f'code_type: CENTER_SIZE {params} }}')


def target(prior, box=GT, var=VAR):
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    bw, bh = box[2] - box[0], box[3] - box[1]
    return np.array([((box[0] + box[2]) - (prior[0] + prior[2])) / 2 / pw / var[0],
                     ((box[1] + box[3]) - (prior[1] + prior[3])) / 2 / ph / var[1],
                     np.log(bw / pw) / var[2], np.log(bh / ph) / var[3]])


def smooth_l1(d):
    return np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5).sum()


def log_softmax(logits):
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def logistic(logits, targets):
    return (np.log1p(np.exp(-np.abs(logits))) + np.maximum(logits, 0) - logits * targets).sum()


def expected(positives, negatives, norm, loc_weight=1.0, loc_loss=smooth_l1, conf="softmax", all_priors=False):
    """The loss from SSD's rules, given which priors match (class 1) and which are mined negatives."""
    loc = LOC.reshape(4, 4)
    logits = CONF.reshape(4, 2)
    loc_sum = sum(loc_loss(loc[p] - target(PRIORS[p])) for p in positives)
    rows = range(4) if all_priors else list(positives) + list(negatives)
    if conf == "softmax":
        conf_sum = -sum(log_softmax(logits[p])[1 if p in positives else 0] for p in rows)
    elif all_priors:  # logistic without mining: unmatched priors get all-zero targets (filled with label 0)
        conf_sum = sum(logistic(logits[p], np.array([0, 1.0 if p in positives else 0])) for p in rows)
    else:
        conf_sum = sum(logistic(logits[p], np.array([0, 1.0]) if p in positives else np.array([1.0, 0]))
                       for p in rows)
    return (loc_weight * loc_sum + conf_sum) / norm


def run(layer_text, loc=LOC, conf=CONF, labels=LABELS):
    layer, bottom, top = build_layer(layer_text, [loc, conf, PRIOR_BLOB, labels])
    return float(forward(layer, bottom, top)[0]), layer, bottom, top


@pytest.mark.parametrize("params, loss_param, value", [
    # PER_PREDICTION matches priors 0 and 1; int(2 * 0.5) = 1 negative: prior 3, the larger background loss.
    ("neg_pos_ratio: 0.5", "", expected([0, 1], [3], 2)),
    ("neg_pos_ratio: 3", "", expected([0, 1], [2, 3], 2)),
    ("neg_pos_ratio: 0.5 loc_weight: 2", "normalization: FULL", expected([0, 1], [3], 4, 2.0)),
    ("neg_pos_ratio: 0.5", "normalization: BATCH_SIZE", expected([0, 1], [3], 1)),
    ("neg_pos_ratio: 0.5", "normalize: false", expected([0, 1], [3], 1)),
    ("neg_pos_ratio: 0.5", "normalization: NONE", expected([0, 1], [3], 1)),
    # Prior 1 overlaps by exactly neg_overlap: neither matched nor a negative.
    ("match_type: BIPARTITE neg_pos_ratio: 3", "", expected([0], [2, 3], 1)),
    ("match_type: BIPARTITE neg_pos_ratio: 0.5", "", expected([0], [], 1)),
    ("overlap_threshold: 0.6 neg_overlap: 0.55 neg_pos_ratio: 2", "", expected([0], [1, 3], 1)),
    ("mining_type: NONE", "", expected([0, 1], [], 2, all_priors=True)),
    ("loc_loss_type: L2 neg_pos_ratio: 0.5", "", expected([0, 1], [3], 2, loc_loss=lambda d: 0.5 * (d * d).sum())),
    ("conf_loss_type: LOGISTIC neg_pos_ratio: 0.5", "", expected([0, 1], [3], 2, conf="logistic")),
    ("conf_loss_type: LOGISTIC mining_type: NONE", "", expected([0, 1], [], 2, conf="logistic", all_priors=True)),
])
def test_multibox_loss_by_hand(params, loss_param, value):
    assert run(text(params, loss_param))[0] == pytest.approx(value, rel=1e-10)


def test_hard_example_mining_drops_unpicked_positives():
    # Per-prior losses (confidence + localization): prior 1 and prior 3 are the two largest;
    # prior 0 stops being a match, prior 3 becomes the one negative.
    conf = np.array([[-3, 3, 3, -3, 3, -3, -5, 5.0]])
    loc = np.zeros((1, 16))
    loss, layer, bottom, top = run(text("mining_type: HARD_EXAMPLE sample_size: 2"), loc=loc, conf=conf)
    logits = conf.reshape(4, 2)
    want = smooth_l1(-target(PRIORS[1])) - log_softmax(logits[1])[1] - log_softmax(logits[3])[0]
    assert loss == pytest.approx(want / 1, rel=1e-10)
    top[0].diff[...] = 1
    layer.backward(top, [True, True, False, False], bottom)
    grad = bottom[1].diff.reshape(4, 2)
    assert (grad[0] == 0).all() and (grad[2] == 0).all() and (grad[1] != 0).all() and (grad[3] != 0).all()
    assert (bottom[0].diff.reshape(4, 4)[[0, 2, 3]] == 0).all()


def test_encode_variance_in_target_scales_prediction_and_target():
    loss = run(text("neg_pos_ratio: 0.5 encode_variance_in_target: true"))[0]
    loc = LOC.reshape(4, 4)
    raw = [target(PRIORS[p], var=np.ones(4)) for p in (0, 1)]
    loc_sum = sum(smooth_l1(loc[p] / VAR - raw[p] / VAR) for p in (0, 1))
    logits = CONF.reshape(4, 2)
    conf_sum = -(log_softmax(logits[0])[1] + log_softmax(logits[1])[1] + log_softmax(logits[3])[0])
    assert loss == pytest.approx((loc_sum + conf_sum) / 2, rel=1e-10)


def test_difficult_and_absent_ground_truth():
    difficult = np.array([[[[0, 1, 0, *GT, 1]]]])
    # Without difficult boxes there is nothing to match; with mining, nothing to mine either.
    assert run(text("use_difficult_gt: false"), labels=difficult)[0] == 0
    none = np.array([[[[-1, -1, -1, -1, -1, -1, -1, -1]]]])
    logits = CONF.reshape(4, 2)
    assert run(text("mining_type: NONE"), labels=none)[0] == pytest.approx(
        -sum(log_softmax(logits[p])[0] for p in range(4)), rel=1e-10)


def test_propagate_down_false_leaves_a_term_out():
    layer_text = text("neg_pos_ratio: 0.5") + " propagate_down: false propagate_down: true " \
                                              "propagate_down: false propagate_down: false"
    logits = CONF.reshape(4, 2)
    conf_only = -(log_softmax(logits[0])[1] + log_softmax(logits[1])[1] + log_softmax(logits[3])[0]) / 2
    assert run(layer_text)[0] == pytest.approx(conf_only, rel=1e-10)


# -- gradients ---------------------------------------------------------------------------------

RNG = np.random.default_rng(21)


def random_case(num=2, loc_classes=1, classes=3):
    """Priors of a 3 x 3 map with 3 boxes a cell, ground truth for two of the images' classes."""
    prior_text = ('type: "PriorBox" prior_box_param { min_size: 12 max_size: 24 aspect_ratio: 2 '
                  'variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }')
    layer, bottom, top = build_layer(prior_text, [np.zeros((1, 1, 3, 3)), np.zeros((1, 3, 30, 30))])
    priors = forward(layer, bottom, top)[0]
    count = priors.shape[2] // 4
    labels = np.array([[[[0, 1, 0, .1, .1, .45, .5, 0], [0, 2, 1, .5, .4, .9, .8, 0],
                         [1, 1, 0, .3, .2, .7, .6, 0]]]])
    loc = RNG.standard_normal((num, count * loc_classes * 4)) * 0.3
    conf = RNG.standard_normal((num, count * classes))
    return [loc, conf, priors, labels]


@pytest.mark.parametrize("params, loss_param, loc_classes", [
    ("", "", 1),
    ("neg_pos_ratio: 1 neg_overlap: 0.3 loc_weight: 0.5", "normalization: FULL", 1),
    ("mining_type: NONE conf_loss_type: LOGISTIC", "normalization: BATCH_SIZE", 1),
    ("mining_type: HARD_EXAMPLE sample_size: 6 loc_loss_type: L2", "", 1),
    ("match_type: BIPARTITE code_type: CORNER", "", 1),
    ("mining_type: NONE share_location: false code_type: CORNER_SIZE", "", 3),
    ("use_prior_for_matching: false overlap_threshold: 0.3", "", 1),
    ("mining_type: NONE share_location: false use_prior_for_matching: false overlap_threshold: 0.2", "", 3),
])
def test_multibox_loss_gradient(params, loss_param, loc_classes):
    layer_text = (f'type: "MultiBoxLoss" loss_param {{ {loss_param} }} '
                  f'multibox_loss_param {{ num_classes: 3 overlap_threshold: 0.3 {params} }}')
    case = random_case(loc_classes=loc_classes)
    layer = check_gradient(layer_text, case, bottoms_checked=[0, 1], kink=None)
    assert layer.num_matches > 0


@pytest.mark.parametrize("params, message", [
    ("", "Must provide num_classes"),
    ("num_classes: 3", "Number of priors must match number of confidence predictions"),
    ("num_classes: 2 share_location: false", "only support negative mining if share_location"),
    ("num_classes: 2 background_label_id: 2", r"background_label_id should be within \[0, num_classes\)"),
    ("num_classes: 2 do_neg_mining: false", "do_neg_mining is deprecated"),
])
def test_multibox_loss_setup_errors(params, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "MultiBoxLoss" multibox_loss_param {{ {params} }}', [LOC, CONF, PRIOR_BLOB, LABELS])


def test_multibox_loss_data_errors():
    with pytest.raises(LayerError, match="Found background label in the dataset"):
        run(text(), labels=np.array([[[[0, 0, 0, *GT, 0]]]]))
    _, layer, bottom, top = run(text())
    with pytest.raises(LayerError, match="cannot backpropagate to label inputs"):
        layer.backward(top, [True, True, False, True], bottom)


@pytest.mark.parametrize("params", ["", "mining_type: NONE conf_loss_type: LOGISTIC",
                                    "mining_type: HARD_EXAMPLE sample_size: 6"])
def test_multibox_loss_on_both_devices(mode, params):
    from engine.backend import array_module, to_host

    case = random_case()
    layer_text = f'type: "MultiBoxLoss" multibox_loss_param {{ num_classes: 3 overlap_threshold: 0.3 {params} }}'
    results = []
    for xp in (np, array_module()):
        layer, bottom, top = build_layer(layer_text, case, xp=xp)
        loss = float(forward(layer, bottom, top)[0])
        top[0].diff[...] = 1
        layer.backward(top, [True, True, False, False], bottom)
        results.append((loss, to_host(bottom[0].diff), to_host(bottom[1].diff)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(results[1][2], results[0][2], rtol=1e-12, atol=1e-15)
