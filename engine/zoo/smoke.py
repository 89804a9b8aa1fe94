"""Train a zoo net for a few iterations on one generated batch: does it run, does its loss fall?

The train_val net keeps every layer; only its Data layers are replaced by
Input layers of a smaller batch (and a smaller image where the architecture
allows, ZooNet.smoke_size). The zoo solver's settings are kept except for
what a short CPU run must change: no tests, no snapshots, no gradient
accumulation. With one fixed batch the loss must fall as the net memorises it.
"""

import numpy as np

from engine import caffe_pb2, formats


def smoke_net(train_val, batch, size):
    """`train_val` with its TRAIN Data layer replaced by Input (batch, 3, size, size) + (batch,)."""
    net = caffe_pb2.NetParameter()
    net.CopyFrom(train_val)
    del net.layer[:]
    for layer in train_val.layer:
        if layer.type != "Data":
            net.layer.add().CopyFrom(layer)
        elif not any(rule.phase == caffe_pb2.TEST for rule in layer.include):
            stand_in = net.layer.add(name=layer.name, type="Input")
            stand_in.top.extend(layer.top)
            stand_in.input_param.shape.add().dim.extend([batch, 3, size, size])
            stand_in.input_param.shape.add().dim.extend([batch])
    return net


def smoke_solver(solver_path, net, iterations, seed=1701):
    """The solver at `solver_path` for `net`, on the CPU, without tests, snapshots or iter_size."""
    solver = caffe_pb2.SolverParameter()
    solver.CopyFrom(formats.read_solver(solver_path))
    solver.ClearField("net")
    solver.net_param.CopyFrom(net)
    solver.ClearField("test_iter")
    solver.test_interval = 0
    solver.max_iter = iterations
    solver.display = 0
    solver.snapshot = 0
    solver.snapshot_after_train = False
    solver.iter_size = 1
    solver.solver_mode = caffe_pb2.SolverParameter.CPU
    solver.random_seed = seed
    return solver


def fixed_batch(train_val, batch, size, classes, seed=7):
    """Inputs like mean-subtracted pixels (std 50, times the transform's scale) and random labels."""
    rng = np.random.default_rng(seed)
    scale = 1.0
    for layer in train_val.layer:
        if layer.type == "Data" and layer.transform_param.HasField("scale"):
            scale = layer.transform_param.scale
    data = rng.standard_normal((batch, 3, size, size)).astype(np.float32) * np.float32(50 * scale)
    labels = rng.integers(0, classes, size=batch).astype(np.float32)
    return data, labels


def weighted_loss(net):
    """The net's objective after a forward pass: every loss top times its loss weight."""
    return sum(float(net.blobs[name].data.sum()) * weight for name, weight in net.blob_loss_weights.items()
               if weight)


def _classes(train_val):
    for layer in reversed(train_val.layer):
        if layer.type == "InnerProduct":
            return layer.inner_product_param.num_output
        if layer.type == "Convolution":
            return layer.convolution_param.num_output
    raise ValueError(f"net '{train_val.name}' has no classifier")


def train_batch(train_val):
    """The batch size of the TRAIN Data layer."""
    for layer in train_val.layer:
        if layer.type == "Data" and not any(rule.phase == caffe_pb2.TEST for rule in layer.include):
            return layer.data_param.batch_size
    raise ValueError(f"net '{train_val.name}' has no TRAIN Data layer")


def run_smoke(spec, iterations=20, root=".", lr_scale=None, batch=None, size=None):
    """Losses of `iterations` solver steps of zoo net `spec` on one fixed generated batch.

    The learning rate follows the linear scaling rule (base_lr times the
    smoke batch over the solver's batch x iter_size) unless `lr_scale` is given:
    the zoo's rates are tuned for hundreds of images per step, and a batch of
    two at full rate makes the deep nets without BatchNorm diverge.
    """
    import engine

    batch = batch or spec.smoke_size[0]
    size = size or spec.smoke_size[1] or spec.input_shape[-1]
    net = smoke_net(spec.train_val, batch, size)
    param = smoke_solver(f"{root}/{spec.solver_path}", net, iterations)
    if lr_scale is None:
        lr_scale = spec.smoke_lr_scale
    if lr_scale is None:
        lr_scale = min(1.0, batch / (train_batch(spec.train_val) * max(1, spec.solver.iter_size)))
    param.base_lr *= lr_scale
    solver = engine.get_solver(param)
    data, labels = fixed_batch(spec.train_val, batch, size, _classes(spec.train_val))
    solver.net.blobs["data"].data = data
    solver.net.blobs["label"].data = labels
    losses = []
    for _ in range(iterations):
        solver.step(1)
        losses.append(weighted_loss(solver.net))
    return losses
