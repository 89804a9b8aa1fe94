"""A small prototxt builder for the model zoo: one call per layer, Caffe's fields.

The zoo's nets are long and regular (inception modules, residual blocks,
depthwise-separable pairs), so they are written once as Python that loops
over the papers' tables and emitted as NetParameter messages. Each helper
returns the name of the blob it produced, so a net reads top to bottom the
way the prototxt does.
"""

from engine import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
MAX, AVE = caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE

# lr_mult/decay_mult pairs used throughout Caffe's zoo.
WEIGHT_AND_BIAS = ((1, 1), (2, 0))
WEIGHT_ONLY = ((1, 1),)
FROZEN_STATS = ((0, 0), (0, 0), (0, 0))  # BatchNorm's mean, variance and factor are not learned


def filler(message, spec):
    """Fill a FillerParameter from ('gaussian', 0.01), ('constant', 1), ('xavier',) or ('msra',)."""
    kind = spec[0]
    message.type = kind
    if kind == "gaussian":
        message.std = spec[1]
    elif kind == "constant":
        message.value = spec[1]


class NetBuilder:
    """Appends layers to a NetParameter; `last` is the blob the previous helper produced."""

    def __init__(self, name):
        self.net = caffe_pb2.NetParameter(name=name)
        self.last = None

    # -- plumbing -------------------------------------------------------------------
    def layer(self, name, type_, bottoms=(), tops=None, params=(), phase=None):
        layer = self.net.layer.add(name=name, type=type_)
        layer.bottom.extend(bottoms)
        layer.top.extend([name] if tops is None else tops)
        for lr_mult, decay_mult in params:
            layer.param.add(lr_mult=lr_mult, decay_mult=decay_mult)
        if phase is not None:
            layer.include.add(phase=phase)
        if layer.top:
            self.last = layer.top[0]
        return layer

    def _bottom(self, bottom):
        return self.last if bottom is None else bottom

    # -- data ------------------------------------------------------------------------
    def data(self, name, phase, source, batch_size, crop_size=0, mirror=False, mean_file=None,
             mean_value=(), scale=None):
        """A Data layer reading an LMDB of Datum records, with Caffe's transform."""
        layer = self.layer(name, "Data", tops=["data", "label"], phase=phase)
        transform = layer.transform_param
        if mirror:
            transform.mirror = True
        if crop_size:
            transform.crop_size = crop_size
        if mean_file:
            transform.mean_file = mean_file
        transform.mean_value.extend(mean_value)
        if scale is not None:
            transform.scale = scale
        layer.data_param.source = source
        layer.data_param.batch_size = batch_size
        layer.data_param.backend = caffe_pb2.DataParameter.LMDB
        self.last = "data"
        return "data"

    # -- vision ----------------------------------------------------------------------
    def conv(self, name, num_output, kernel, stride=1, pad=0, group=1, bottom=None, top=None,
             weight=("gaussian", 0.01), bias=("constant", 0), bias_term=True, params=None,
             type_="Convolution"):
        """A Convolution; `bias_term=False` for convolutions followed by BatchNorm.
        `type_="ConvolutionDepthwise"` writes the depthwise layer of the forks that have one."""
        if params is None:
            params = WEIGHT_AND_BIAS if bias_term else WEIGHT_ONLY
        layer = self.layer(name, type_, [self._bottom(bottom)], [top or name], params)
        conv = layer.convolution_param
        conv.num_output = num_output
        if not bias_term:
            conv.bias_term = False
        if pad:
            conv.pad.append(pad)
        conv.kernel_size.append(kernel)
        if stride != 1:
            conv.stride.append(stride)
        if group != 1:
            conv.group = group
        filler(conv.weight_filler, weight)
        if bias_term:
            filler(conv.bias_filler, bias)
        return layer.top[0]

    def fc(self, name, num_output, bottom=None, weight=("gaussian", 0.01), bias=("constant", 0),
           params=WEIGHT_AND_BIAS):
        layer = self.layer(name, "InnerProduct", [self._bottom(bottom)], params=params)
        ip = layer.inner_product_param
        ip.num_output = num_output
        filler(ip.weight_filler, weight)
        filler(ip.bias_filler, bias)
        return name

    def pool(self, name, kernel=0, stride=1, method=MAX, pad=0, bottom=None, global_pooling=False,
             ceil_mode=None):
        """Pooling; `ceil_mode=False` (a fork's field) rounds the output size down, as PyTorch does."""
        layer = self.layer(name, "Pooling", [self._bottom(bottom)])
        pool = layer.pooling_param
        pool.pool = method
        if global_pooling:
            pool.global_pooling = True
            return name
        pool.kernel_size = kernel
        if stride != 1:
            pool.stride = stride
        if pad:
            pool.pad = pad
        if ceil_mode is not None:
            pool.ceil_mode = ceil_mode
        return name

    def lrn(self, name, local_size=5, alpha=0.0001, beta=0.75, bottom=None):
        layer = self.layer(name, "LRN", [self._bottom(bottom)])
        layer.lrn_param.local_size = local_size
        layer.lrn_param.alpha = alpha
        layer.lrn_param.beta = beta
        return name

    # -- in-place neurons and normalization --------------------------------------------
    def relu(self, name, bottom=None):
        blob = self._bottom(bottom)
        self.layer(name, "ReLU", [blob], [blob])
        return blob

    def dropout(self, name, ratio=0.5, bottom=None):
        blob = self._bottom(bottom)
        self.layer(name, "Dropout", [blob], [blob]).dropout_param.dropout_ratio = ratio
        return blob

    def batch_norm(self, name, bottom=None, top=None):
        """BatchNorm with frozen statistics blobs; in place unless `top` is given.

        use_global_stats is left unset: Caffe then uses batch statistics in
        TRAIN and the stored averages in TEST (deploy nets set it explicitly).
        """
        blob = self._bottom(bottom)
        self.layer(name, "BatchNorm", [blob], [top or blob], FROZEN_STATS)
        return top or blob

    def scale(self, name, bottom=None, params=()):
        """A learned per-channel scale and shift after BatchNorm, in place."""
        blob = self._bottom(bottom)
        layer = self.layer(name, "Scale", [blob], [blob], params)
        layer.scale_param.bias_term = True
        return blob

    def sigmoid(self, name, bottom=None):
        blob = self._bottom(bottom)
        self.layer(name, "Sigmoid", [blob], [blob])
        return blob

    # -- combining ---------------------------------------------------------------------
    def slice(self, name, bottom, tops, slice_point, axis=1):
        layer = self.layer(name, "Slice", [bottom], tops)
        layer.slice_param.slice_point.append(slice_point)
        layer.slice_param.axis = axis
        return tops

    def shuffle_channel(self, name, group, bottom=None):
        """ShuffleNet's channel shuffle (farmingyard/ShuffleNet)."""
        layer = self.layer(name, "ShuffleChannel", [self._bottom(bottom)])
        layer.shuffle_channel_param.group = group
        return name

    def axpy(self, name, scale, x, y):
        """SENet's Axpy: scale (N x C x 1 x 1) * x + y, the squeeze-excitation residual sum."""
        self.layer(name, "Axpy", [scale, x, y])
        return name

    def concat(self, name, bottoms):
        self.layer(name, "Concat", bottoms)
        return name

    def eltwise_sum(self, name, bottoms):
        self.layer(name, "Eltwise", bottoms)
        return name

    # -- losses and metrics --------------------------------------------------------------
    def loss(self, name, bottom, top=None, weight=None):
        layer = self.layer(name, "SoftmaxWithLoss", [bottom, "label"], [top or name])
        if weight is not None:
            layer.loss_weight.append(weight)
        return layer.top[0]

    def accuracy(self, name, bottom, top_k=1, top=None, phase=TEST):
        layer = self.layer(name, "Accuracy", [bottom, "label"], [top or name], phase=phase)
        if top_k != 1:
            layer.accuracy_param.top_k = top_k
        return layer.top[0]


def imagenet_data(builder, crop_size, train_batch, test_batch=50, mean_file=None, mean_value=(),
                  scale=None, name="data"):
    """The TRAIN and TEST Data layers of an ImageNet net (ILSVRC-2012 LMDBs under data/ilsvrc12)."""
    if not mean_file and not mean_value:
        raise ValueError("an ImageNet net needs a mean file or mean values")
    for phase, source, batch in ((TRAIN, "data/ilsvrc12/ilsvrc12_train_lmdb", train_batch),
                                 (TEST, "data/ilsvrc12/ilsvrc12_val_lmdb", test_batch)):
        builder.data(name, phase, source, batch, crop_size=crop_size, mirror=phase == TRAIN,
                     mean_file=mean_file, mean_value=mean_value, scale=scale)
    return "data"


IMAGENET_MEAN_FILE = "data/ilsvrc12/imagenet_mean.binaryproto"
CIFAR10_MEAN_FILE = "data/cifar10/mean.binaryproto"
BGR_MEAN = (104, 117, 123)
