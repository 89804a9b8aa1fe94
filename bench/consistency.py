"""Before timing: does the torch model compute what our net computes?

Both run the benchmark net from the same prototxt, weights and inputs: the
full net in TEST (Dropout is the identity there) for the loss and the
scores, and the net without Dropout in TRAIN (BatchNorm on batch
statistics) for the loss, the scores and every parameter gradient.

The oracle is torch in float64. Our float32 values must be about as close
to it as torch's own float32 values are (RATIO), or within a floor. The
gradient floor is wide because float32 rounding decides some discrete
choices: the winner of a max-pooling window whose two largest inputs are
equal, the gate of a ReLU whose input is 1e-6. Each such flip moves one
whole gradient entry; in ResNet-18's 4x4 stage one flipped ReLU gate is
0.7% of the gradient norm (measured), and whether torch float32 flips the
same entries is chance. Semantic mistakes show in the forward values,
which are held to 1e-5.
"""

import numpy as np

RATIO, FORWARD_FLOOR, GRADIENT_FLOOR = 4.0, 1e-5, 2e-2


def _our_values(engine, net_param, phase, weights_path, inputs, scores, backward):
    net = engine.Net(net_param, phase, weights=weights_path)
    for name, values in inputs.items():
        net.blobs[name].data[...] = values
    net.forward_from_to()
    out = {"loss": np.array(net.blobs["loss"].data), scores: np.array(net.blobs[scores].data)}
    if backward:
        net.backward_from_to()
        for layer, blobs in net.params.items():
            for index, blob in enumerate(blobs):
                out[f"d{layer}/{index}"] = np.array(blob.diff)
    return out


def _torch_values(net_param, weights, phase, inputs, scores, backward, double):
    import torch

    from torch_from_prototxt import TorchNet

    model = TorchNet(net_param, weights, phase)
    if double:
        model = model.double()
    tensors = {name: torch.from_numpy(values.astype(np.float64) if double else values)
               for name, values in inputs.items()}
    blobs = model(tensors)
    loss = model.loss(blobs)
    out = {"loss": loss.detach().numpy(), scores: blobs[scores].detach().numpy()}
    if backward:
        loss.backward()
        for layer, params in model.caffe_params().items():
            for index, tensor in enumerate(params):
                if tensor.grad is not None:
                    out[f"d{layer}/{index}"] = tensor.grad.numpy()
    return out


def _error(values, oracle):
    diff = np.asarray(values, dtype=np.float64) - oracle
    return float(np.linalg.norm(diff) / max(float(np.linalg.norm(oracle)), 1e-30))


def check(engine, net_param, plain_param, weights_path, weights, inputs, scores):
    """Report: per quantity our error and torch float32's (both against torch float64), and 'ok'."""
    report = {"errors": {}, "failures": []}
    for tag, phase, param, backward in (("TEST", engine.TEST, net_param, False),
                                        ("TRAIN", engine.TRAIN, plain_param, True)):
        ours = _our_values(engine, param, phase, weights_path, inputs, scores, backward)
        single = _torch_values(param, weights, phase, inputs, scores, backward, double=False)
        oracle = _torch_values(param, weights, phase, inputs, scores, backward, double=True)
        report[f"{tag} loss"] = float(oracle["loss"])
        for key, truth in oracle.items():
            if key not in ours:
                report["failures"].append(f"{tag} {key}: our net has no such value")
                continue
            mine, theirs = _error(ours[key], truth), _error(single[key], truth)
            report["errors"][f"{tag} {key}"] = (mine, theirs)
            floor = GRADIENT_FLOOR if key.startswith("d") else FORWARD_FLOOR
            if mine > max(RATIO * theirs, floor):
                report["failures"].append(f"{tag} {key}: error {mine:.2e} against torch float64 "
                                          f"(torch float32: {theirs:.2e})")
    def worst(gradients):
        """The quantity closest to failing: (name, our error, torch float32's error)."""
        keys = [k for k in report["errors"] if (" d" in k) == gradients] or [None]
        if keys == [None]:
            return ("-", 0.0, 0.0)
        floor = GRADIENT_FLOOR if gradients else FORWARD_FLOOR
        key = max(keys, key=lambda k: report["errors"][k][0] / max(RATIO * report["errors"][k][1], floor))
        return (key,) + tuple(report["errors"][key])
    report["worst_forward"], report["worst_gradient"] = worst(False), worst(True)
    report["ok"] = not report["failures"]
    return report
