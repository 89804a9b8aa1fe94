"""SSD's (weiliu89/caffe, branch ssd) layers for building detection heads:
Permute (reorder axes), Normalize (L2 normalization with a learned scale) and
PriorBox (the default boxes of one feature map)."""

import numpy as np

from ..backend import get_array_module, to_device
from ..fillers import fill
from .base import Layer, register_layer


@register_layer
class PermuteLayer(Layer):
    """top = bottom with its axes in `order` (axes not named follow in their order)."""

    type = "Permute"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        num_axes = bottom[0].num_axes
        order = []
        for axis in self.param.permute_param.order:
            self.check(axis < num_axes, f"order should be less than the input dimension ({axis} for "
                                        f"a {num_axes}-axis bottom)")
            self.check(axis not in order, f"there are duplicate orders ({list(self.param.permute_param.order)})")
            order.append(axis)
        self.order = tuple(order + [axis for axis in range(num_axes) if axis not in order])
        self.inverse = tuple(int(i) for i in np.argsort(self.order))

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == len(self.order),
                   f"bottom has {bottom[0].num_axes} axes, but the layer was set up for {len(self.order)}")
        top[0].reshape(tuple(bottom[0].shape[axis] for axis in self.order))

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.transpose(self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.transpose(self.inverse)


@register_layer
class NormalizeLayer(Layer):
    """L2-normalize each image (across_spatial) or each position across channels,
    then multiply by a learned scale (one value, or one per channel).

    The norm is sqrt(sum of squares + eps). The bottom gradient is SSD's: with
    per-channel scales it multiplies the whole normalized-input gradient by the
    channel's scale, which is the exact gradient only when the scales are
    equal (as SSD's nets initialize them); training follows SSD's updates.
    """

    type = "Normalize"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.norm_param
        self.check(bottom[0].num_axes >= 2, "Number of axes of bottom blob must be >=2.")
        channels = bottom[0].shape[1]
        if not len(self.blobs):
            self.blobs.add_blob(*(() if p.channel_shared else (channels,)))
            filler = p.scale_filler if p.HasField("scale_filler") else \
                self._caffe_pb2.FillerParameter(type="constant", value=1.0)
            fill(self.blobs[0].data, filler)
        want = 1 if p.channel_shared else channels
        self.check(self.blobs[0].count == want, f"Scale size is inconsistent with prototxt config "
                                                f"({self.blobs[0].count} values, {want} expected)")

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes >= 2, "Number of axes of bottom blob must be >=2.")
        top[0].reshape(bottom[0].shape)

    def _geometry(self, blob):
        num, channels = blob.shape[0], blob.shape[1]
        return num, channels, blob.count // max(num * channels, 1)

    def _scale(self):
        scale = self.blobs[0].data
        return scale.reshape(()) if self.param.norm_param.channel_shared else scale.reshape(1, -1, 1)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data.reshape(self._geometry(bottom[0]))
        axes = (1, 2) if self.param.norm_param.across_spatial else (1,)
        eps = np.float32(self.param.norm_param.eps)
        self.norm = xp.sqrt((x * x).sum(axis=axes, keepdims=True) + eps.astype(x.dtype))
        self.normed = x / self.norm
        top[0].data[...] = (self.normed * self._scale()).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        shared = self.param.norm_param.channel_shared
        grad = top[0].diff.reshape(self._geometry(top[0]))
        if self.param_propagate_down[0]:
            product = grad * self.normed
            self.blobs[0].diff[...] += (product.sum() if shared else product.sum(axis=(0, 2))).reshape(
                self.blobs[0].shape)
        if propagate_down[0]:
            x = bottom[0].data.reshape(grad.shape)
            axes = (1, 2) if self.param.norm_param.across_spatial else (1,)
            dot = (x * grad).sum(axis=axes, keepdims=True)
            diff = (grad - x * dot / (self.norm * self.norm)) / self.norm
            bottom[0].diff[...] = (diff * self._scale()).reshape(bottom[0].shape)


@register_layer
class PriorBoxLayer(Layer):
    """The prior (default) boxes of a feature map, normalized to the image, and
    their variances: top is (1, 2, H * W * num_priors * 4).

    Per cell, per min_size: the min_size square, then sqrt(min_size * max_size)
    square (if max_size), then one box per aspect ratio other than 1 (each
    followed by its flip). SSD truncates min_size and max_size to integers.
    """

    type = "PriorBox"
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.prior_box_param
        self.check(len(p.min_size) > 0, "must provide min_size.")
        self.check(all(size > 0 for size in p.min_size), "min_size must be positive.")
        # SSD takes the square root of each ratio unchecked (NaN boxes for ratios <= 0); refuse them instead.
        self.check(all(0 < ar < float("inf") for ar in p.aspect_ratio),
                   f"aspect_ratio must be positive and finite, got {list(p.aspect_ratio)}")
        ratios = [np.float32(1.0)]
        for ar in p.aspect_ratio:
            ar = np.float32(ar)
            if any(abs(ar - r) < 1e-6 for r in ratios):
                continue
            ratios.append(ar)
            if p.flip:
                ratios.append(np.float32(1.0 / float(ar)))
        if len(p.max_size):
            self.check(len(p.max_size) == len(p.min_size),
                       f"max_size must be given once per min_size ({len(p.max_size)} vs {len(p.min_size)})")
            for low, high in zip(p.min_size, p.max_size):
                self.check(high > low, "max_size must be greater than min_size.")
        variances = list(p.variance) or [0.1]
        self.check(len(variances) in (1, 4), f"give 1 or 4 variances, not {len(variances)}")
        self.check(all(v > 0 for v in variances), "variances must be positive")
        self.variances = np.array(variances * (4 // len(variances)), dtype=np.float32)
        if p.HasField("img_h") or p.HasField("img_w"):
            self.check(not p.HasField("img_size"), "Either img_size or img_h/img_w should be specified; not both.")
            self.check(p.img_h > 0, "img_h should be larger than 0.")
            self.check(p.img_w > 0, "img_w should be larger than 0.")
            self.img = (p.img_h, p.img_w)
        elif p.HasField("img_size"):
            self.check(p.img_size > 0, "img_size should be larger than 0.")
            self.img = (p.img_size, p.img_size)
        else:
            self.img = None
            self.check(len(bottom) == 2, "needs the image as bottom[1] when img_size (or img_h/img_w) is not given")
        if p.HasField("step_h") or p.HasField("step_w"):
            self.check(not p.HasField("step"), "Either step or step_h/step_w should be specified; not both.")
            self.check(p.step_h > 0, "step_h should be larger than 0.")
            self.check(p.step_w > 0, "step_w should be larger than 0.")
            self.step = (np.float32(p.step_h), np.float32(p.step_w))
        elif p.HasField("step"):
            self.check(p.step > 0, "step should be larger than 0.")
            self.step = (np.float32(p.step), np.float32(p.step))
        else:
            self.step = None
        self.box_sizes = self._box_sizes(p, ratios)
        self.num_priors = len(self.box_sizes)

    @staticmethod
    def _box_sizes(p, ratios):
        """(width, height) of each prior of a cell, in SSD's order and float arithmetic."""
        sizes = []
        for index, min_value in enumerate(p.min_size):
            min_size = int(min_value)
            sizes.append((np.float32(min_size), np.float32(min_size)))
            if len(p.max_size):
                side = np.float32(np.sqrt(float(min_size * int(p.max_size[index]))))
                sizes.append((side, side))
            for ar in ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                root = np.sqrt(ar, dtype=np.float32)
                sizes.append((np.float32(min_size) * root, np.float32(min_size) / root))
        return np.array(sizes, dtype=np.float32)

    @staticmethod
    def _hw(blob):
        shape = blob.shape + (1,) * (4 - blob.num_axes)
        return shape[2], shape[3]

    def reshape(self, bottom, top):
        height, width = self._hw(bottom[0])
        self.check(height * width > 0, f"bottom[0] {bottom[0].shape} has no cells")
        top[0].reshape(1, 2, height * width * self.num_priors * 4)

    def forward(self, bottom, top):
        layer_h, layer_w = self._hw(bottom[0])
        img_h, img_w = self.img if self.img is not None else self._hw(bottom[1])
        if self.step is not None:
            step_h, step_w = self.step
        else:
            step_h, step_w = np.float32(img_h) / np.float32(layer_h), np.float32(img_w) / np.float32(layer_w)
        offset = np.float32(self.param.prior_box_param.offset)
        cx = (np.arange(layer_w, dtype=np.float32) + offset) * step_w
        cy = (np.arange(layer_h, dtype=np.float32) + offset) * step_h
        cx = np.broadcast_to(cx[None, :, None], (layer_h, layer_w, 1)).astype(np.float64)
        cy = np.broadcast_to(cy[:, None, None], (layer_h, layer_w, 1)).astype(np.float64)
        half_w = self.box_sizes[:, 0].astype(np.float64) / 2.0
        half_h = self.box_sizes[:, 1].astype(np.float64) / 2.0
        boxes = np.stack([(cx - half_w) / img_w, (cy - half_h) / img_h,
                          (cx + half_w) / img_w, (cy + half_h) / img_h], axis=-1)
        if self.param.prior_box_param.clip:
            boxes = np.clip(boxes, 0.0, 1.0)
        out = np.empty((2, boxes.size), dtype=top[0].dtype)
        out[0] = boxes.reshape(-1)
        out[1] = np.tile(self.variances, boxes.size // 4)
        top[0].data[...] = to_device(out.reshape(top[0].shape), top[0].xp)
