"""Net: the layer DAG built from a NetParameter, with pycaffe's interface.

Construction follows Caffe's pipeline in named steps: read and upgrade →
filter by NetState → insert splits → create and wire layers (in-place tops
reuse their bottom blob) → parameters (sharing by ParamSpec name) → which
layers and bottoms need backward. Layers run in prototxt order.
"""

import logging
from collections import OrderedDict

import numpy as np

from . import backend, caffe_pb2, formats, memory
from .blob import Blob
from .errors import CaffeError, LayerError, MemoryLimitError, NetError, ProtoError
from .layers.base import layer_class
from .netgraph import filter_net, insert_splits

log = logging.getLogger("engine")

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST
_PHASES = {"TRAIN": TRAIN, "TEST": TEST, TRAIN: TRAIN, TEST: TEST}


def _phase(value):
    try:
        return _PHASES[value]
    except (KeyError, TypeError):
        raise CaffeError(f"phase must be TRAIN or TEST, got {value!r}") from None


class Net:
    """A net built for one phase.

    Accepts pycaffe's forms: `Net(model, phase)`, `Net(model, weights, phase)`,
    `Net(model, phase, weights=..., level=..., stages=...)`; `model` is a
    prototxt path or a NetParameter.
    """

    def __init__(self, model, *args, phase=None, weights=None, level=0, stages=(), state=None, source=None):
        if len(args) == 1:
            phase = args[0] if phase is None else phase
        elif len(args) == 2:
            weights, phase = args
        elif args:
            raise TypeError("Net(model, phase) or Net(model, weights, phase)")
        param = formats.read_net(model)
        if source is None:
            source = "<NetParameter>" if isinstance(model, caffe_pb2.NetParameter) else str(model)
        self.source = source
        if state is None:
            state = caffe_pb2.NetState()
            state.CopyFrom(param.state)
            if phase is not None:
                state.phase = _phase(phase)
            state.level = int(level)
            state.stage.extend(stages or [])
        elif phase is not None:
            state.phase = _phase(phase)
        self.phase = state.phase
        self.state = state
        self.debug_info = bool(param.debug_info)
        try:
            with memory.net_budget():
                self._init(param)
        except NetError as exc:
            kind = MemoryLimitError if isinstance(exc, MemoryLimitError) else NetError
            raise kind(self._where(exc) + str(exc)) from None
        if weights:
            for path in str(weights).split(","):
                self.copy_from(path)

    # -- construction --------------------------------------------------------------
    def _init(self, param):
        self.name = param.name
        self._blob_dict = self._param_dict = self._layer_dict = None
        self.param = insert_splits(filter_net(param, self.state))
        self.layers = []
        self._layer_names = []
        self._blob_names = []
        self._blobs = []
        self.bottom_ids = []  # per layer: blob indices
        self.top_ids = []
        self.bottom_need_backward = []
        self.layer_need_backward = []
        self.blob_need_backward = []
        self._input_ids = []
        self._init_params()
        name_to_id = {}
        available = OrderedDict()
        for layer_index, lparam in enumerate(self.param.layer):
            if not lparam.HasField("phase"):
                lparam.phase = self.phase
            self._layer_names.append(lparam.name)
            cls = layer_class(lparam.type, where=f"layer '{lparam.name}': ")
            layer = cls(lparam)
            self.layers.append(layer)
            need_backward = self._wire_bottoms(layer_index, lparam, name_to_id, available)
            self._wire_tops(layer_index, lparam, layer, name_to_id, available)
            bottoms, tops = self.bottom_blobs(layer_index), self.top_blobs(layer_index)
            try:
                layer.set_up(bottoms, tops)
            except MemoryLimitError as exc:
                raise MemoryLimitError(str(LayerError(layer, str(exc)))) from None
            except CaffeError:
                raise
            except MemoryError as exc:
                raise LayerError(layer, f"out of memory while setting up: {exc}") from None
            except (ValueError, IndexError, ArithmeticError) as exc:
                raise LayerError(layer, f"cannot set up: {exc}") from exc
            log.debug("Setting up %s", lparam.name)
            for blob_id in self.top_ids[layer_index]:
                log.debug("Top shape: %s (%d)", " ".join(map(str, self._blobs[blob_id].shape)),
                          self._blobs[blob_id].count)
            need_backward |= self._append_params(layer_index, lparam, layer)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for blob_id in self.top_ids[layer_index]:
                    self.blob_need_backward[blob_id] = True
        self._output_ids = [name_to_id[name] for name in available]
        self._blob_loss_weights = [0.0] * len(self._blobs)
        for layer_index, layer in enumerate(self.layers):
            for top_index, blob_id in enumerate(self.top_ids[layer_index]):
                self._blob_loss_weights[blob_id] = layer.loss(top_index)
        self._backward_from_losses()
        if self.param.force_backward:
            self._force_backward()

    def _where(self, exc):
        """'file:line: ' of the layer being built when the error happened, if known."""
        names = getattr(self, "_layer_names", [])
        if not names or self.source.startswith("<"):
            return f"{self.source}: "
        line = formats.locate_layer(self.source, names[-1])
        return f"{self.source}:{line}: " if line else f"{self.source}: "

    def _wire_bottoms(self, layer_index, lparam, name_to_id, available):
        ids, needs, need_backward = [], [], False
        for bottom_index, name in enumerate(lparam.bottom):
            if name not in available:
                raise NetError(f"Unknown bottom blob '{name}' (layer '{lparam.name}', bottom index {bottom_index})")
            blob_id = name_to_id[name]
            del available[name]
            ids.append(blob_id)
            need = self.blob_need_backward[blob_id]
            if len(lparam.propagate_down):
                if len(lparam.propagate_down) != len(lparam.bottom):
                    raise NetError(f"layer '{lparam.name}': propagate_down must be given once per bottom")
                need = bool(lparam.propagate_down[bottom_index])
            needs.append(need)
            need_backward |= self.blob_need_backward[blob_id]
        self.bottom_ids.append(ids)
        self.bottom_need_backward.append(needs)
        return need_backward

    def _wire_tops(self, layer_index, lparam, layer, name_to_id, available):
        ids = []
        for top_index, name in enumerate(lparam.top):
            in_place = top_index < len(lparam.bottom) and lparam.bottom[top_index] == name
            if in_place:
                blob_id = name_to_id[name]
            elif name in name_to_id:
                raise NetError(f"Top blob '{name}' produced by multiple sources (layer '{lparam.name}')")
            else:
                blob_id = self._new_blob(name)
                name_to_id[name] = blob_id
            if lparam.type == "Input":
                self._input_ids.append(blob_id)
            available[name] = True
            ids.append(blob_id)
        if layer.auto_top_blobs:
            # Caffe adds anonymous tops up to the layer's required count; they are never outputs.
            wanted = max(layer.min_top_blobs or 0, layer.exact_num_top_blobs or 0)
            ids.extend(self._new_blob("(automatic)") for _ in range(len(ids), wanted))
        self.top_ids.append(ids)

    def _new_blob(self, name):
        self._blobs.append(Blob())
        self._blob_names.append(name)
        self.blob_need_backward.append(False)
        return len(self._blobs) - 1

    def _init_params(self):
        self.all_params = []  # every parameter blob in layer order, shared ones repeated
        self.param_owners = []
        self.param_display_names = []
        self.param_layer_indices = []
        self._param_names_index = {}
        self.learnable_params = []
        self._learnable_param_ids = []
        self.params_lr = []
        self.params_weight_decay = []
        self._has_params_lr = []
        self._has_params_decay = []

    def _append_params(self, layer_index, lparam, layer):
        need_backward = False
        for param_index, blob in enumerate(layer.blobs):
            if blob.count == 0:
                # Caffe's fillers CHECK that a parameter has values: an empty one is a mistake.
                shape = " x ".join(map(str, blob.shape)) or "scalar"
                raise LayerError(layer, f"parameter blob {param_index} has an empty shape ({shape}); "
                                        "a num_output, kernel or input dimension of 0?")
        for param_index in range(len(layer.blobs)):
            spec = lparam.param[param_index] if param_index < len(lparam.param) else caffe_pb2.ParamSpec()
            need = spec.lr_mult != 0
            need_backward |= need
            layer.param_propagate_down[param_index] = need
            self._append_param(layer_index, lparam, layer, param_index, spec)
        return need_backward

    def _append_param(self, layer_index, lparam, layer, param_index, spec):
        net_param_id = len(self.all_params)
        name = spec.name
        self.all_params.append(layer.blobs[param_index])
        self.param_layer_indices.append((layer_index, param_index))
        self.param_display_names.append(name or str(param_index))
        if not name or name not in self._param_names_index:
            if name:
                self._param_names_index[name] = net_param_id
            self.param_owners.append(-1)
            self._learnable_param_ids.append(len(self.learnable_params))
            self.learnable_params.append(layer.blobs[param_index])
            self._has_params_lr.append(spec.HasField("lr_mult"))
            self._has_params_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
            return
        owner_id = self._param_names_index[name]
        self.param_owners.append(owner_id)
        owner_layer, owner_index = self.param_layer_indices[owner_id]
        owner = self.all_params[owner_id]
        mine = layer.blobs[param_index]
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if owner.count != mine.count:
                raise NetError(
                    f"Cannot share param '{name}' owned by layer '{self._layer_names[owner_layer]}' with layer "
                    f"'{lparam.name}'; count mismatch. Owner layer param shape is {owner.shape}; "
                    f"sharing layer shape is {mine.shape}")
            mine.share_data(owner)
            mine.share_diff(owner)
        else:
            if owner.shape != mine.shape:
                raise NetError(
                    f"Cannot share param '{name}' owned by layer '{self._layer_names[owner_layer]}' with layer "
                    f"'{lparam.name}'; shape mismatch. Owner layer param shape is {owner.shape}; "
                    f"sharing layer expects shape {mine.shape}")
            layer.blobs[param_index] = owner
            self.all_params[net_param_id] = owner
        learnable_id = self._learnable_param_ids[owner_id]
        self._learnable_param_ids.append(learnable_id)
        for field, has, values in (("lr_mult", self._has_params_lr, self.params_lr),
                                   ("decay_mult", self._has_params_decay, self.params_weight_decay)):
            if not spec.HasField(field):
                continue
            value = getattr(spec, field)
            if has[learnable_id] and values[learnable_id] != value:
                raise NetError(f"Shared param '{name}' has mismatched {field} (layer '{lparam.name}')")
            has[learnable_id] = True
            values[learnable_id] = value

    def _backward_from_losses(self):
        """Caffe's pruning: no backward for layers that lead to no loss or whose tops skip it."""
        under_loss, skip = set(), set()
        for layer_index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[layer_index]
            contributes, skip_down = False, True
            for top_index, blob_id in enumerate(self.top_ids[layer_index]):
                if layer.loss(top_index) or blob_id in under_loss:
                    contributes = True
                if blob_id not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self.layer_need_backward[layer_index] and skip_down:
                self.layer_need_backward[layer_index] = False
                self.bottom_need_backward[layer_index] = [False] * len(self.bottom_ids[layer_index])
            if not contributes:
                self.layer_need_backward[layer_index] = False
            for bottom_index, blob_id in enumerate(self.bottom_ids[layer_index]):
                if contributes:
                    under_loss.add(blob_id)
                else:
                    self.bottom_need_backward[layer_index][bottom_index] = False
                if not self.bottom_need_backward[layer_index][bottom_index]:
                    skip.add(blob_id)

    def _force_backward(self):
        for layer_index, layer in enumerate(self.layers):
            self.layer_need_backward[layer_index] = True
            needs = self.bottom_need_backward[layer_index]
            for bottom_index, blob_id in enumerate(self.bottom_ids[layer_index]):
                needs[bottom_index] = needs[bottom_index] or layer.allow_force_backward(bottom_index)
                self.blob_need_backward[blob_id] = self.blob_need_backward[blob_id] or needs[bottom_index]
            layer.param_propagate_down = [True] * len(layer.blobs)

    def bottom_blobs(self, layer_index):
        """The bottom Blobs of layer `layer_index` (Caffe's bottom_vecs)."""
        return [self._blobs[i] for i in self.bottom_ids[layer_index]]

    def top_blobs(self, layer_index):
        """The top Blobs of layer `layer_index` (Caffe's top_vecs)."""
        return [self._blobs[i] for i in self.top_ids[layer_index]]

    # -- pycaffe's properties ---------------------------------------------------------
    @property
    def blobs(self):
        return self._named_blobs()

    def _named_blobs(self):
        # The wiring is fixed once built, so each mapping is made once (as pycaffe caches them).
        if self._blob_dict is None:
            self._blob_dict = OrderedDict(zip(self._blob_names, self._blobs))
        return self._blob_dict

    @property
    def params(self):
        if self._param_dict is None:
            self._param_dict = OrderedDict((name, layer.blobs) for name, layer in
                                           zip(self._layer_names, self.layers) if len(layer.blobs))
        return self._param_dict

    @property
    def layer_dict(self):
        if self._layer_dict is None:
            self._layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        return self._layer_dict

    @property
    def blob_loss_weights(self):
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def inputs(self):
        return [self._blob_names[i] for i in self._input_ids]

    @property
    def outputs(self):
        return [self._blob_names[i] for i in self._output_ids]

    @property
    def top_names(self):
        return OrderedDict((name, [self._blob_names[i] for i in ids])
                           for name, ids in zip(self._layer_names, self.top_ids))

    @property
    def bottom_names(self):
        return OrderedDict((name, [self._blob_names[i] for i in ids])
                           for name, ids in zip(self._layer_names, self.bottom_ids))

    def layer_index(self, name):
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetError(f"no layer named '{name}' in net '{self.name}'") from None

    # -- running ----------------------------------------------------------------------
    def forward_from_to(self, start=0, end=None):
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        for i in range(start, end + 1):
            loss += self.layers[i].run_forward(self.bottom_blobs(i), self.top_blobs(i))
            if self.debug_info:
                self._forward_debug_info(i)
        return loss

    def backward_from_to(self, start=None, end=0):
        start = len(self.layers) - 1 if start is None else start
        for i in range(start, end - 1, -1):
            if self.layer_need_backward[i]:
                self.layers[i].run_backward(self.top_blobs(i), self.bottom_need_backward[i],
                                            self.bottom_blobs(i))
                if self.debug_info:
                    self._backward_debug_info(i)

    def forward_backward(self):
        loss = self.forward_from_to()
        self.backward_from_to()
        return loss

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's forward: set inputs, run, return {output name: data}."""
        blobs = list(blobs or [])
        start_index = self.layer_index(start) if start is not None else 0
        if end is not None:
            end_index = self.layer_index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_index = len(self.layers) - 1
            outputs = set(self.outputs + blobs)
        for name, values in kwargs.items():
            if name not in self.inputs and name not in self._named_blobs():
                raise NetError(f"forward: '{name}' is not a blob of net '{self.name}'")
            blob = self._named_blobs()[name]
            values = backend.to_device(values, blob.xp)
            if values.shape[0] != blob.shape[0]:
                raise NetError(f"Input '{name}' is not batch sized: {values.shape[0]} vs {blob.shape[0]}")
            blob.data[...] = values
        self.loss = self.forward_from_to(start_index, end_index)
        return {name: self._named_blobs()[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's backward: set top diffs, run, return {input name: diff}."""
        diffs = list(diffs or [])
        start_index = self.layer_index(start) if start is not None else len(self.layers) - 1
        if end is not None:
            end_index = self.layer_index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_index = 0
            outputs = set(self.inputs + diffs)
        for name, values in kwargs.items():
            blob = self._named_blobs()[name]
            values = backend.to_device(values, blob.xp)
            if values.shape[0] != blob.shape[0]:
                raise NetError(f"Diff '{name}' is not batch sized: {values.shape[0]} vs {blob.shape[0]}")
            blob.diff[...] = values
        self.backward_from_to(start_index, end_index)
        return {name: self._named_blobs()[name].diff for name in outputs}

    def set_input_arrays(self, data, labels):
        """pycaffe's feed for a first MemoryData layer: `layer.reset(data, labels)` does the checks."""
        if not self.layers or self.layers[0].type != "MemoryData":
            raise NetError("set_input_arrays may only be called if the first layer is a MemoryData layer")
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim == 1:
            labels = labels.reshape(-1, 1, 1, 1)
        self.layers[0].reset(np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(labels))

    def reshape(self):
        for i, layer in enumerate(self.layers):
            layer.reshape(self.bottom_blobs(i), self.top_blobs(i))

    def clear_param_diffs(self):
        for blob in self.learnable_params:
            blob.diff[...] = 0

    def update(self):
        """Caffe's Net::Update: data -= diff for every owned parameter."""
        for blob in self.learnable_params:
            blob.data[...] -= blob.diff

    # -- weights ----------------------------------------------------------------------
    def copy_from(self, path):
        """Copy weights by layer name from a .caffemodel or HDF5 file (Caffe's CopyTrainedLayersFrom)."""
        weights = formats.read_weights(path)
        by_name = self.layer_dict
        for name, blobs in weights.items():
            layer = by_name.get(name)
            if layer is None:
                log.info("Ignoring source layer %s", name)
                continue
            self._copy_layer(path, layer, blobs)

    def _copy_layer(self, path, layer, sources):
        if len(sources) != len(layer.blobs):
            raise NetError(f"{path}: incompatible number of blobs for layer '{layer.name}': "
                           f"file has {len(sources)}, net has {len(layer.blobs)}")
        for index, (source, target) in enumerate(zip(sources, layer.blobs)):
            if isinstance(source, caffe_pb2.BlobProto):
                if not formats.legacy_shape_matches(source, target.shape):
                    raise NetError(
                        f"{path}: cannot copy param {index} weights from layer '{layer.name}'; shape mismatch. "
                        f"Source param shape is {formats.blob_shape(source)}; target param shape is "
                        f"{target.shape}. To learn this layer's parameters from scratch rather than copying "
                        "from a saved net, rename the layer.")
                try:
                    values = formats.blobproto_to_array(source, shape=target.shape)
                except ProtoError as exc:
                    raise NetError(f"{path}: param {index} of layer '{layer.name}': {exc} (a truncated or "
                                   "garbled file?)") from None
            else:
                values = source
                if tuple(values.shape) != target.shape:
                    raise NetError(
                        f"{path}: cannot copy param {index} weights from layer '{layer.name}'; shape mismatch. "
                        f"Source param shape is {tuple(values.shape)}; target param shape is {target.shape}.")
            target.data[...] = backend.to_device(values, target.xp)

    def to_proto(self, write_diff=False):
        """The net with its parameters, as Caffe's Net::ToProto writes it."""
        param = caffe_pb2.NetParameter()
        param.name = self.name
        for layer in self.layers:
            lparam = param.layer.add()
            lparam.CopyFrom(layer.param)
            del lparam.blobs[:]
            for blob in layer.blobs:
                diff = backend.to_host(blob.diff) if write_diff else None
                lparam.blobs.add().CopyFrom(formats.array_to_blobproto(backend.to_host(blob.data), diff))
        return param

    def save(self, path, write_diff=False):
        formats.write_binary(path, self.to_proto(write_diff))

    def save_hdf5(self, path, write_diff=False):
        layers = [(name, [(backend.to_host(b.data), backend.to_host(b.diff)) for b in blobs])
                  for name, blobs in self.params.items()]
        formats.write_hdf5_weights(path, layers, write_diff)

    def load_hdf5(self, path):
        self.copy_from(path)

    def share_with(self, other):
        """Caffe's ShareTrainedLayersWith: use `other`'s parameter storage, by layer name."""
        mine = self.layer_dict
        for name, source in other.layer_dict.items():
            target = mine.get(name)
            if target is None or not len(source.blobs):
                continue
            if len(target.blobs) != len(source.blobs):
                raise NetError(f"incompatible number of blobs for layer '{name}'")
            for index, (src, dst) in enumerate(zip(source.blobs, target.blobs)):
                if src.shape != dst.shape:
                    raise NetError(f"cannot share param {index} of layer '{name}': shape mismatch "
                                   f"{src.shape} vs {dst.shape}")
                dst.share_data(src)

    # -- debug info (solver debug_info) ----------------------------------------------
    def _forward_debug_info(self, i):
        xp = backend.get_array_module
        for blob_id in self.top_ids[i]:
            blob = self._blobs[blob_id]
            mean = float(xp(blob.data).abs(blob.data).mean()) if blob.count else 0.0
            log.info("    [Forward] Layer %s, top blob %s data: %g", self._layer_names[i],
                     self._blob_names[blob_id], mean)
        for index, blob in enumerate(self.layers[i].blobs):
            mean = float(xp(blob.data).abs(blob.data).mean()) if blob.count else 0.0
            log.info("    [Forward] Layer %s, param blob %d data: %g", self._layer_names[i], index, mean)

    def _backward_debug_info(self, i):
        xp = backend.get_array_module
        for bottom_index, blob_id in enumerate(self.bottom_ids[i]):
            if not self.bottom_need_backward[i][bottom_index]:
                continue
            blob = self._blobs[blob_id]
            mean = float(xp(blob.diff).abs(blob.diff).mean()) if blob.count else 0.0
            log.info("    [Backward] Layer %s, bottom blob %s diff: %g", self._layer_names[i],
                     self._blob_names[blob_id], mean)
        for index, blob in enumerate(self.layers[i].blobs):
            if not self.layers[i].param_propagate_down[index]:
                continue
            mean = float(xp(blob.diff).abs(blob.diff).mean()) if blob.count else 0.0
            log.info("    [Backward] Layer %s, param blob %d diff: %g", self._layer_names[i], index, mean)
