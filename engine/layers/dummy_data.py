"""DummyData: tops of given shapes filled by fillers (tests, benchmarks).

Shapes come from `shape` (once, or once per top) or from the legacy
num/channels/height/width lists, never both. `data_filler` is given zero
times (constant 0), once (used for every top) or once per top. As in Caffe,
a constant filler fills its tops once at set-up; any other refills them at
every forward.
"""

from .. import caffe_pb2
from ..fillers import fill
from .base import Layer, register_layer


@register_layer
class DummyDataLayer(Layer):
    type = "DummyData"
    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.dummy_data_param
        num_top, num_fillers = len(top), len(p.data_filler)
        self.check(num_fillers in (0, 1, num_top),
                   f"Number of data fillers must be 0, 1 or equal to the number of tops: {num_top}; "
                   f"you specified {num_fillers} data fillers.")
        legacy = {name: list(getattr(p, name)) for name in ("num", "channels", "height", "width")}
        if any(legacy.values()):
            self.check(not len(p.shape), "Both shape and legacy fields were specified")
            for name, values in legacy.items():
                self.check(len(values) in (1, num_top),
                           f"Must specify '{name}' once, or once per top blob ({num_top}); "
                           f"specified {len(values)}.")
            shapes = [tuple(values[0] if len(values) == 1 else values[i] for values in legacy.values())
                      for i in range(num_top)]
        else:
            self.check(len(p.shape) in (1, num_top),
                       f"Must specify 'shape' once, or once per top blob ({num_top}); "
                       f"specified {len(p.shape)}.")
            shapes = [tuple(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(num_top)]
        if num_fillers == 0:
            default = caffe_pb2.FillerParameter(type="constant", value=0)
            self.fillers = [default] * num_top
        else:
            self.fillers = [p.data_filler[0 if num_fillers == 1 else i] for i in range(num_top)]
        self.refill = [filler.type != "constant" for filler in self.fillers]
        for blob, shape, filler in zip(top, shapes, self.fillers):
            blob.reshape(shape)
            if filler.type == "constant":
                fill(blob.data, filler)

    def reshape(self, bottom, top):
        """Shapes are fixed at set-up."""

    def forward(self, bottom, top):
        for blob, filler, refill in zip(top, self.fillers, self.refill):
            if refill:
                fill(blob.data, filler)
