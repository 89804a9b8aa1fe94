"""pycaffe's Net: the engine's Net plus the extras pycaffe.py adds in Python.

`engine.Net` already speaks most of pycaffe (blobs, params, forward/backward
with start/end, top_names, save, copy_from, ...). This subclass adds what is
left: batched forward_all / forward_backward_all, the private accessors some
scripts reach for (_forward, _inputs, _top_ids, ...), and the per-layer
callbacks. Nets that a solver builds are engine Nets; `adopt` turns them into
this class in place, so `solver.net` offers the same interface as pycaffe's,
where these methods are attached to the one C++-backed Net class.

In GPU mode pycaffe's `.data` and `.diff` are NumPy arrays, as Caffe hands
Python its CPU copy: `blobs` and `params` then give `HostBlob`s, and
`forward`/`backward` return host arrays. The engine underneath keeps the
blobs on the device and uploads what Python wrote before it next uses them.
"""

import itertools
from collections import OrderedDict

import numpy as np

import engine
from engine import backend
from engine.blob import HostBlob, host_blobs


class Net(engine.Net):
    """`caffe.Net(model, phase)`, `caffe.Net(model, weights, phase)` or with
    the keywords `weights=`, `level=`, `stages=`, as pycaffe accepts."""

    # -- host views in GPU mode ----------------------------------------------------------
    def _on_gpu(self):
        return bool(self._blobs) and self._blobs[0].xp is not np

    @property
    def blobs(self):
        if not self._on_gpu():
            return self._named_blobs()
        if self.__dict__.get("_host_blob_dict") is None:
            self._host_blob_dict = OrderedDict((name, HostBlob(blob)) for name, blob in self._named_blobs().items())
        return self._host_blob_dict

    @property
    def params(self):
        params = super().params
        if not self._on_gpu():
            return params
        if self.__dict__.get("_host_param_dict") is None:
            self._host_param_dict = OrderedDict((name, host_blobs(blobs)) for name, blobs in params.items())
        return self._host_param_dict

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        outputs = super().forward(blobs=blobs, start=start, end=end, **kwargs)
        return {name: backend.to_host(values) for name, values in outputs.items()} if self._on_gpu() else outputs

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        outputs = super().backward(diffs=diffs, start=start, end=end, **kwargs)
        return {name: backend.to_host(values) for name, values in outputs.items()} if self._on_gpu() else outputs

    # -- pycaffe's private accessors -------------------------------------------------
    @property
    def _inputs(self):
        return list(self._input_ids)

    @property
    def _outputs(self):
        return list(self._output_ids)

    def _top_ids(self, layer_index):
        return list(self.top_ids[layer_index])

    def _bottom_ids(self, layer_index):
        return list(self.bottom_ids[layer_index])

    def _forward(self, start, end):
        return self.forward_from_to(start, end)

    def _backward(self, start, end):
        self.backward_from_to(start, end)

    # -- per-layer callbacks (Net::add_before_forward and friends) --------------------
    def _callbacks(self, kind):
        store = self.__dict__.setdefault("_pycaffe_callbacks", {})
        return store.setdefault(kind, [])

    def before_forward(self, callback):
        """Call `callback(layer_index)` before each layer's forward."""
        self._callbacks("before_forward").append(callback)

    def after_forward(self, callback):
        self._callbacks("after_forward").append(callback)

    def before_backward(self, callback):
        self._callbacks("before_backward").append(callback)

    def after_backward(self, callback):
        self._callbacks("after_backward").append(callback)

    def forward_from_to(self, start=0, end=None):
        before, after = self._callbacks("before_forward"), self._callbacks("after_forward")
        if not before and not after:
            return super().forward_from_to(start, end)
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        for i in range(start, end + 1):
            for callback in before:
                callback(i)
            loss += super().forward_from_to(i, i)
            for callback in after:
                callback(i)
        return loss

    def backward_from_to(self, start=None, end=0):
        before, after = self._callbacks("before_backward"), self._callbacks("after_backward")
        if not before and not after:
            return super().backward_from_to(start, end)
        start = len(self.layers) - 1 if start is None else start
        for i in range(start, end - 1, -1):
            for callback in before:
                callback(i)
            super().backward_from_to(i, i)
            for callback in after:
                callback(i)
        return None

    # -- batched passes ----------------------------------------------------------------
    def _batch(self, blobs):
        """Split {name: array} into net-sized batches; the last one is zero-padded."""
        num = len(next(iter(blobs.values())))
        batch_size = next(iter(self.blobs.values())).shape[0]
        full, remainder = divmod(num, batch_size)
        for b in range(full):
            yield {name: values[b * batch_size:(b + 1) * batch_size] for name, values in blobs.items()}
        if remainder:
            padded = {}
            for name, values in blobs.items():
                values = np.asarray(values)
                padding = np.zeros((batch_size - remainder,) + values.shape[1:], dtype=values.dtype)
                padded[name] = np.concatenate([values[-remainder:], padding])
            yield padded

    def forward_all(self, blobs=None, **kwargs):
        """Forward every batch of the given inputs; {output: stacked host array}, padding dropped."""
        wanted = set(self.outputs + list(blobs or []))
        collected = {name: [] for name in wanted}
        batches = self._batch(kwargs) if kwargs else [{}]
        for batch in batches:
            outs = self.forward(blobs=blobs, **batch)
            for name, values in outs.items():
                collected[name].append(np.array(backend.to_host(values), copy=True))
        return _stack_and_trim(collected, kwargs)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """Forward and backward in batches: inputs feed forward, output diffs feed backward."""
        wanted_data = set(self.outputs + list(blobs or []))
        wanted_diff = set(self.inputs + list(diffs or []))
        data = {name: [] for name in wanted_data}
        grads = {name: [] for name in wanted_diff}
        forward_in = {name: kwargs[name] for name in self.inputs if name in kwargs}
        backward_in = {name: kwargs[name] for name in self.outputs if name in kwargs}
        forward_batches = self._batch(forward_in) if forward_in else []
        backward_batches = self._batch(backward_in) if backward_in else []
        pairs = itertools.zip_longest(forward_batches, backward_batches, fillvalue={})
        for fb, bb in (pairs if (forward_in or backward_in) else [({}, {})]):
            for name, values in self.forward(blobs=blobs, **fb).items():
                data[name].append(np.array(backend.to_host(values), copy=True))
            for name, values in self.backward(diffs=diffs, **bb).items():
                grads[name].append(np.array(backend.to_host(values), copy=True))
        return _stack_and_trim(data, kwargs), _stack_and_trim(grads, kwargs)


def _stack_and_trim(collected, kwargs):
    """Concatenate per-batch arrays and drop the rows that padded the last batch.

    Blobs without a batch axis (a scalar loss) give one value per batch instead.
    """
    given = len(next(iter(kwargs.values()))) if kwargs else None
    stacked = {}
    for name, parts in collected.items():
        if not parts:
            stacked[name] = np.zeros((0,), np.float32)
        elif parts[0].ndim == 0:
            stacked[name] = np.stack(parts)
        else:
            values = np.concatenate(parts)
            stacked[name] = values[:given] if given is not None and len(values) > given else values
    return stacked


def adopt(net):
    """Give an engine Net built elsewhere (by a solver) pycaffe's Net interface, in place.

    Only exact `engine.Net` instances change class; this class adds methods and
    no state, so the object and every reference to it stay valid.
    """
    if type(net) is engine.Net:
        net.__class__ = Net
    return net
