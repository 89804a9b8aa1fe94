"""Crop: cut bottom 0 to the shape of bottom 1 on the axes from `axis` on.

Offsets are one value for every cropped axis or one per cropped axis
(Caffe's crop_param); axes before `axis` are kept whole. Bottom 1 only
supplies a shape and gets no gradient.
"""

from .base import Layer, register_layer


@register_layer
class CropLayer(Layer):
    type = "Crop"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        p = self.param.crop_param
        data, reference = bottom[0], bottom[1]
        num_axes = data.num_axes
        try:
            start = data.canonical_axis(p.axis)
        except IndexError:
            raise self.error(f"crop axis {p.axis} bigger than input dim ({num_axes} axes, "
                             f"bottom shape {data.shape})") from None
        offsets = list(p.offset)
        self.check(len(offsets) <= 1 or start + len(offsets) == num_axes,
                   "number of offset values specified must be equal to the number of dimensions "
                   f"following axis ({len(offsets)} offsets, axis {start}, {num_axes} axes).")
        self.check(reference.num_axes >= num_axes,
                   f"bottom 1 needs at least as many axes as bottom 0 ({reference.shape} vs {data.shape})")
        shape, self.window = [], []
        for i in range(num_axes):
            offset, size = 0, data.shape[i]
            if i >= start:
                offset = offsets[0] if len(offsets) == 1 else (offsets[i - start] if offsets else 0)
                size = reference.shape[i]
            self.check(data.shape[i] - offset >= size,
                       f"the crop for dimension {i} is out-of-bounds with size {size} and offset {offset} "
                       f"(bottom 0 has {data.shape[i]})")
            shape.append(size)
            self.window.append(slice(offset, offset + size))
        self.window = tuple(self.window)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.window]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        diff[...] = 0
        diff[self.window] = top[0].diff
