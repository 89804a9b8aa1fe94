"""The layer contract and the registry of layer types.

A layer is pycaffe's Python layer: `setup(bottom, top)`, `reshape(bottom,
top)`, `forward(bottom, top)`, `backward(top, propagate_down, bottom)` over
lists of Blobs. The net calls the fixed outer methods (`set_up`,
`run_forward`, `run_backward`), which check blob counts, apply loss weights
and reshape before every forward, as Caffe's Layer does.

Gradient rule (Caffe's): `backward` OVERWRITES bottom diffs and ADDS INTO
parameter diffs (the solver clears those each iteration; iter_size relies on
the accumulation).
"""

from ..blob import BlobVec
from ..errors import LayerError, NetError

_REGISTRY = {}


def register_layer(cls):
    """Class decorator: make `cls` the implementation of Caffe type `cls.type`."""
    if not cls.type:
        raise TypeError(f"{cls.__name__} has no Caffe type name")
    if cls.type in _REGISTRY and _REGISTRY[cls.type] is not cls:
        raise TypeError(f"layer type {cls.type!r} registered twice")
    _REGISTRY[cls.type] = cls
    return cls


def layer_types():
    """Registered Caffe type names, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def layer_class(type_name, where=""):
    _load_all()
    try:
        return _REGISTRY[type_name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise NetError(f"{where}Unknown layer type: {type_name} (known types: {known})") from None


def _load_all():
    # Importing the package imports every family module, which registers its layers.
    from .. import layers  # noqa: F401


class Layer:
    """Base of every layer. Subclasses set `type` and the blob-count hints."""

    type = None
    # Blob-count hints, as Caffe's ExactNumBottomBlobs() and friends; None = no rule.
    exact_num_bottom_blobs = None
    min_bottom_blobs = None
    max_bottom_blobs = None
    exact_num_top_blobs = None
    min_top_blobs = None
    max_top_blobs = None
    equal_num_bottom_top_blobs = False
    # Create the minimum required top blobs when the prototxt names fewer.
    auto_top_blobs = False

    def __init__(self, param, phase=None):
        from .. import caffe_pb2

        self.param = param  # LayerParameter
        self.name = param.name
        self.phase = param.phase if phase is None else phase
        self.blobs = BlobVec()
        self.param_propagate_down = []
        self.loss_weights = []
        if self.type is None:
            self.type = param.type
        self._caffe_pb2 = caffe_pb2

    # -- the contract (subclasses override) ---------------------------------
    def setup(self, bottom, top):
        """Check parameters and create parameter blobs (once)."""

    def reshape(self, bottom, top):
        """Derive top shapes from bottom shapes (before every forward)."""
        raise NotImplementedError

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        """Default: no gradient. Layers that have one override this."""

    def allow_force_backward(self, bottom_index):
        """False for bottoms that never take a gradient (labels)."""
        return True

    # -- helpers for subclasses ---------------------------------------------
    def error(self, message):
        return LayerError(self, message)

    def check(self, condition, message):
        if not condition:
            raise self.error(message)

    # -- fixed outer methods, called by the net --------------------------------
    def check_blob_counts(self, bottom, top):
        nb, nt = len(bottom), len(top)
        rules = [
            (self.exact_num_bottom_blobs, nb, "==", "bottom"),
            (self.min_bottom_blobs, nb, ">=", "bottom"),
            (self.max_bottom_blobs, nb, "<=", "bottom"),
            (self.exact_num_top_blobs, nt, "==", "top"),
            (self.min_top_blobs, nt, ">=", "top"),
            (self.max_top_blobs, nt, "<=", "top"),
        ]
        for want, have, op, what in rules:
            if want is None:
                continue
            ok = {"==": have == want, ">=": have >= want, "<=": have <= want}[op]
            if not ok:
                rel = {"==": "exactly", ">=": "at least", "<=": "at most"}[op]
                raise self.error(f"takes {rel} {want} {what} blob(s), but {have} given")
        if self.equal_num_bottom_top_blobs and nb != nt:
            raise self.error(f"needs as many top blobs as bottom blobs ({nb} bottom, {nt} top)")

    def set_up(self, bottom, top):
        self.check_blob_counts(bottom, top)
        self.setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)
        while len(self.param_propagate_down) < len(self.blobs):
            self.param_propagate_down.append(True)

    def default_loss_weight(self, top_index):
        """Loss layers give their first top a weight of 1 unless the prototxt says."""
        return 0.0

    def set_loss_weights(self, top):
        given = list(self.param.loss_weight)
        if given and len(given) != len(top):
            raise self.error("loss_weight must be unspecified or specified once per top blob "
                             f"({len(given)} given for {len(top)} tops)")
        if not given:
            given = [self.default_loss_weight(i) for i in range(len(top))]
        self.loss_weights = [float(w) for w in given]
        for blob, weight in zip(top, self.loss_weights):
            if weight:
                blob.diff[...] = weight

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    def run_forward(self, bottom, top):
        """Reshape, forward, and return this layer's weighted loss."""
        self.reshape(bottom, top)
        self.forward(bottom, top)
        total = 0.0
        for index, blob in enumerate(top):
            if self.loss(index):
                xp = blob.xp
                total += float(xp.vdot(blob.data.ravel(), blob.diff.ravel()))
        return total

    def run_backward(self, top, propagate_down, bottom):
        self.backward(top, propagate_down, bottom)

    def __repr__(self):
        return f"<{self.type} layer '{self.name}'>"
