"""A PyTorch model built from a Caffe prototxt, for like-for-like benchmarks.

`TorchNet(net_param, weights, phase)` runs the layers of a NetParameter in
prototxt order over a dict of named tensors, with the same parameter values
as our net (`weights`: layer name -> list of arrays, Caffe's blob layouts).
Each supported type maps to the torch operator that computes what Caffe
computes; geometry torch cannot express the Caffe way (pooling windows that
Caffe keeps and torch drops, STOCHASTIC pooling, N-d convolution) raises
NotImplementedError rather than silently differing.

The model is built on the CPU; `TorchNet(...).to("cuda")` moves it to a GPU:
every parameter and BatchNorm statistic is registered with the module, and
Module.to converts them in place, so the layer closures see the moved tensors.

Only this module and the torch workers of bench/cpu_train_step.py and
bench/gpu_train_step.py import torch; the engine never does.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from engine import caffe_pb2
from engine.netgraph import filter_net

_POOL = caffe_pb2.PoolingParameter
_ELTWISE = caffe_pb2.EltwiseParameter
_LRN = caffe_pb2.LRNParameter
_LOSS = caffe_pb2.LossParameter
_NLL_CAP = -math.log(float(np.finfo(np.float32).tiny))


def _pair(repeated, single_h, single_w, has_h, default):
    """Caffe's (h, w) from `kernel_size`-style repeated fields or the _h/_w pair."""
    if has_h:
        return int(single_h), int(single_w)
    values = list(repeated)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise NotImplementedError("only 2-D convolution is mapped to torch")


def caffe_pooled_size(size, kernel, stride, pad, clip=None):
    """Caffe's pooling output size: ceil, then drop a last window that starts in the padding.

    Caffe clips both axes as soon as either is padded, hence `clip` (default: pad > 0).
    """
    pooled = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    clip = pad > 0 if clip is None else clip
    if clip and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def torch_pooled_size(size, kernel, stride, pad):
    """torch's ceil_mode output size (its rule drops a window starting past the input + pad)."""
    pooled = (size + 2 * pad - kernel + stride - 1) // stride + 1
    if (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def _loss_normalizer(lparam, outer, inner, valid):
    """Caffe's GetNormalizer, never below 1."""
    p = lparam.loss_param
    if p.HasField("normalization"):
        mode = p.normalization
    elif p.HasField("normalize"):
        mode = _LOSS.VALID if p.normalize else _LOSS.BATCH_SIZE
    else:
        mode = p.normalization
    value = {_LOSS.FULL: outer * inner, _LOSS.VALID: valid, _LOSS.BATCH_SIZE: outer}.get(mode, 1)
    return torch.clamp(torch.as_tensor(value, dtype=torch.float32), min=1.0)


class TorchNet(torch.nn.Module):
    """The layers of one phase of a Caffe net, as torch operations on named tensors."""

    def __init__(self, net_param, weights, phase=caffe_pb2.TRAIN):
        super().__init__()
        state = caffe_pb2.NetState(phase=phase)
        self.net_param = filter_net(net_param, state)
        self.phase = phase
        self.training_phase = phase == caffe_pb2.TRAIN
        self.params = torch.nn.ParameterDict()
        self.lr_mult, self.decay_mult = {}, {}
        self.steps = []
        self.loss_tops = {}
        for lparam in self.net_param.layer:
            method = getattr(self, "_" + lparam.type.lower(), None)
            if method is None:
                raise NotImplementedError(f"layer '{lparam.name}': type {lparam.type} is not mapped to torch")
            fn = method(lparam, [np.asarray(w, dtype=np.float32) for w in weights.get(lparam.name, [])])
            self.steps.append((lparam, fn))
            for index, weight in enumerate(lparam.loss_weight):
                if weight:
                    self.loss_tops[lparam.top[index]] = float(weight)
            if lparam.type.endswith("Loss") and not len(lparam.loss_weight):
                self.loss_tops[lparam.top[0]] = 1.0

    # -- parameters ----------------------------------------------------------------
    def _param(self, lparam, index, array):
        key = f"{lparam.name}__{index}"
        self.params[key] = torch.nn.Parameter(torch.from_numpy(np.array(array, dtype=np.float32)))
        spec = lparam.param[index] if index < len(lparam.param) else caffe_pb2.ParamSpec()
        self.lr_mult[key], self.decay_mult[key] = spec.lr_mult, spec.decay_mult
        return self.params[key]

    def param_groups(self, base_lr, weight_decay):
        """torch.optim groups with Caffe's per-parameter lr_mult and decay_mult; lr_mult 0 is frozen."""
        groups = []
        for key, param in self.params.items():
            if self.lr_mult[key] == 0:
                param.requires_grad_(False)
                continue
            groups.append({"params": [param], "lr": base_lr * self.lr_mult[key],
                           "weight_decay": weight_decay * self.decay_mult[key]})
        return groups

    def caffe_params(self):
        """layer name -> list of tensors, in Caffe's blob order (for gradient comparison)."""
        out = {}
        for key, param in self.params.items():
            layer, _, index = key.rpartition("__")
            out.setdefault(layer, {})[int(index)] = param
        return {layer: [blobs[i] for i in sorted(blobs)] for layer, blobs in out.items()}

    # -- running -------------------------------------------------------------------
    def forward(self, inputs):
        """Run every layer; return the dict of all blobs by name (in-place tops rebind)."""
        blobs = dict(inputs)
        for lparam, fn in self.steps:
            results = fn([blobs[name] for name in lparam.bottom])
            for name, value in zip(lparam.top, results):
                blobs[name] = value
        return blobs

    def loss(self, blobs):
        return sum(blobs[name] * weight for name, weight in self.loss_tops.items())

    # -- layer types: each returns fn(bottom tensors) -> list of top tensors ------------
    def _input(self, lparam, w):
        return lambda bottom: []

    def _split(self, lparam, w):
        return lambda bottom: [bottom[0]] * len(lparam.top)

    def _silence(self, lparam, w):
        return lambda bottom: []

    def _convolution(self, lparam, w):
        p = lparam.convolution_param
        if p.axis != 1:
            raise NotImplementedError(f"layer '{lparam.name}': convolution axis {p.axis}")
        stride = _pair(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), 1)
        pad = _pair(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), 0)
        dilation = _pair(p.dilation, 1, 1, False, 1)
        weight = self._param(lparam, 0, w[0])
        bias = self._param(lparam, 1, w[1]) if p.bias_term else None
        group = p.group
        return lambda bottom: [F.conv2d(bottom[0], weight, bias, stride, pad, dilation, group)]

    def _innerproduct(self, lparam, w):
        p = lparam.inner_product_param
        weight = self._param(lparam, 0, w[0])
        bias = self._param(lparam, 1, w[1]) if p.bias_term else None
        axis = p.axis

        def run(bottom):
            x = bottom[0].flatten(axis % bottom[0].dim()) if bottom[0].dim() > axis + 1 else bottom[0]
            return [F.linear(x, weight.t() if p.transpose else weight, bias)]
        return run

    def _pooling(self, lparam, w):
        p = lparam.pooling_param
        if p.pool == _POOL.STOCHASTIC:
            raise NotImplementedError(f"layer '{lparam.name}': STOCHASTIC pooling has no torch operator")
        kernel = _pair([p.kernel_size] if p.HasField("kernel_size") else [], p.kernel_h, p.kernel_w,
                       p.HasField("kernel_h"), 0)
        stride = _pair([p.stride], p.stride_h, p.stride_w, p.HasField("stride_h"), 1)
        pad = _pair([p.pad], p.pad_h, p.pad_w, p.HasField("pad_h"), 0)

        def run(bottom):
            x = bottom[0]
            k, s, q = kernel, stride, pad
            if p.global_pooling:
                k, s, q = tuple(x.shape[2:]), (1, 1), (0, 0)
            for axis in (0, 1):
                size = x.shape[2 + axis]
                want = caffe_pooled_size(size, k[axis], s[axis], q[axis], clip=any(q))
                if torch_pooled_size(size, k[axis], s[axis], q[axis]) != want:
                    raise NotImplementedError(
                        f"layer '{lparam.name}': Caffe keeps {want} windows on axis {axis + 2} (size {size}, "
                        f"kernel {k[axis]}, stride {s[axis]}, pad {q[axis]}); torch's ceil_mode does not")
            if p.pool == _POOL.MAX:
                return [F.max_pool2d(x, k, s, q, ceil_mode=True)]
            # Caffe divides by the window clipped to the padded input, as count_include_pad does.
            return [F.avg_pool2d(x, k, s, q, ceil_mode=True, count_include_pad=True)]
        return run

    def _relu(self, lparam, w):
        slope = lparam.relu_param.negative_slope
        if slope:
            return lambda bottom: [F.leaky_relu(bottom[0], slope)]
        return lambda bottom: [F.relu(bottom[0])]

    def _lrn(self, lparam, w):
        p = lparam.lrn_param
        if p.norm_region == _LRN.ACROSS_CHANNELS:
            # torch divides alpha by the window size, as Caffe does.
            return lambda bottom: [F.local_response_norm(bottom[0], p.local_size, p.alpha, p.beta, p.k)]
        pad = (p.local_size - 1) // 2

        def within(bottom):
            x = bottom[0]
            mean_sq = F.avg_pool2d(x * x, p.local_size, 1, pad, count_include_pad=True)
            return [x * (1 + p.alpha * mean_sq) ** -p.beta]
        return within

    def _dropout(self, lparam, w):
        ratio = lparam.dropout_param.dropout_ratio
        return lambda bottom: [F.dropout(bottom[0], ratio, training=self.training_phase)]

    def _softmax(self, lparam, w):
        axis = lparam.softmax_param.axis
        return lambda bottom: [F.softmax(bottom[0], dim=axis)]

    def _softmaxwithloss(self, lparam, w):
        axis = lparam.softmax_param.axis
        ignore = lparam.loss_param.ignore_label if lparam.loss_param.HasField("ignore_label") else None

        def run(bottom):
            scores, labels = bottom[0], bottom[1]
            if axis != 1:
                scores = scores.movedim(axis, 1)
            labels = labels.reshape((scores.shape[0],) + tuple(scores.shape[2:])).long()
            valid = torch.ones_like(labels, dtype=torch.bool) if ignore is None else labels != ignore
            losses = F.cross_entropy(scores, torch.where(valid, labels, 0), reduction="none")
            # Caffe takes -log(max(p, FLT_MIN)): the value saturates, the gradient stays p - onehot.
            losses = (losses + (losses.clamp(max=_NLL_CAP) - losses).detach()) * valid
            outer = scores.shape[0]
            inner = labels[0].numel()
            tops = [losses.sum() / _loss_normalizer(lparam, outer, inner, valid.sum())]
            if len(lparam.top) > 1:
                tops.append(F.softmax(bottom[0], dim=axis))
            return tops
        return run

    def _accuracy(self, lparam, w):
        axis = lparam.accuracy_param.axis

        def run(bottom):
            with torch.no_grad():
                pred = bottom[0].movedim(axis, -1).reshape(-1, bottom[0].shape[axis]).argmax(-1)
                return [(pred == bottom[1].reshape(-1).long()).float().mean()]
        return run

    def _batchnorm(self, lparam, w):
        p = lparam.batch_norm_param
        global_stats = p.use_global_stats if p.HasField("use_global_stats") else not self.training_phase
        factor = float(w[2].reshape(-1)[0]) if len(w) > 2 else 0.0
        factor = 0.0 if factor == 0 else 1.0 / factor
        mean = torch.from_numpy(w[0] * factor).contiguous()
        var = torch.from_numpy(w[1] * factor).contiguous()
        key = lparam.name.replace(".", "_")
        self.register_buffer(f"{key}__mean", mean)
        self.register_buffer(f"{key}__var", var)
        momentum = 1.0 - p.moving_average_fraction

        def run(bottom):
            x = bottom[0]
            running_mean = getattr(self, f"{key}__mean")
            running_var = getattr(self, f"{key}__var")
            return [F.batch_norm(x, running_mean, running_var, None, None, not global_stats, momentum, p.eps)]
        return run

    def _scale(self, lparam, w):
        p = lparam.scale_param
        if len(lparam.bottom) > 1:
            raise NotImplementedError(f"layer '{lparam.name}': Scale with a second bottom")
        gamma = self._param(lparam, 0, w[0])
        beta = self._param(lparam, 1, w[1]) if p.bias_term else None

        def run(bottom):
            x = bottom[0]
            axis = p.axis % x.dim()
            shape = (1,) * axis + tuple(gamma.shape) + (1,) * (x.dim() - axis - gamma.dim())
            y = x * gamma.reshape(shape)
            return [y + beta.reshape(shape) if beta is not None else y]
        return run

    def _eltwise(self, lparam, w):
        p = lparam.eltwise_param
        coeffs = list(p.coeff) or [1.0] * len(lparam.bottom)

        def run(bottom):
            if p.operation == _ELTWISE.PROD:
                out = bottom[0]
                for x in bottom[1:]:
                    out = out * x
            elif p.operation == _ELTWISE.MAX:
                out = bottom[0]
                for x in bottom[1:]:
                    out = torch.maximum(out, x)
            else:
                out = sum(c * x if c != 1 else x for c, x in zip(coeffs, bottom))
            return [out]
        return run

    def _concat(self, lparam, w):
        p = lparam.concat_param
        axis = p.concat_dim if p.HasField("concat_dim") else p.axis
        return lambda bottom: [torch.cat(bottom, dim=axis)]

    def _flatten(self, lparam, w):
        p = lparam.flatten_param
        return lambda bottom: [bottom[0].flatten(p.axis, p.end_axis)]
