"""pycaffe's NetSpec: write a net as Python calls, get a NetParameter.

`L.Convolution(bottom, kernel_size=3, num_output=8)` makes a Function (one
layer) and returns its Top (output blob); tops feed further layers. Assigning
tops to a NetSpec names them; `to_proto` walks back from the assigned tops
and emits every layer needed, in dependency order. The naming and keyword
rules are pycaffe's, because saved prototxts and scripts depend on them:

- a layer is named after its first top; a top without a name gets
  `<Type><n>` from a counter per type (`Convolution1`), as does a top-less
  layer that was not assigned to the NetSpec;
- `ntop=k` asks for k tops (0 returns the Function itself), `in_place=True`
  makes the tops the bottoms;
- a keyword ending in `param` goes on the LayerParameter (`param=`,
  `transform_param=`, `python_param=`); any other keyword goes in the layer
  type's own `<type>_param` message if it has that field, else on the
  LayerParameter (`loss_weight`, `include`, `name`, ...). Lists become repeated
  fields, dicts become messages, a lone value for a repeated field a list of one.
"""

from collections import Counter, OrderedDict

from engine import caffe_pb2


def param_name_dict():
    """{layer type: prefix of its `<prefix>_param` field}, read from LayerParameter's fields."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    # Deconvolution is configured by convolution_param in Caffe (no message of its own).
    names.setdefault("Deconvolution", "convolution")
    return names


def assign_proto(proto, name, val):
    """Set field `name` of message `proto` from a Python value, recursively."""
    field = getattr(proto, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if val and isinstance(val[0], dict):
            for item in val:
                message = field.add()
                for key, value in item.items():
                    assign_proto(message, key, value)
        else:
            field.extend(val)
    elif isinstance(val, dict):
        for key, value in val.items():
            assign_proto(field, key, value)
    else:
        setattr(proto, name, val)


def to_proto(*tops):
    """A NetParameter with every layer needed to compute `tops` (names generated).

    A top-less layer (the Function that ntop=0 returns) may be passed too.
    """
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Top:
    """One output blob of a Function (layer): the `n`-th of its tops."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _update(self, params):
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: its type, its bottoms (Tops) and its keyword parameters."""

    def __init__(self, type_name, inputs, params):
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(bottom)})")
        self.type_name = type_name
        self.inputs = inputs
        self.params = params
        # ntop and in_place shape the layer; they must not reach the prototxt.
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _update(self, params):
        self.params.update(params)

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottom_names.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for key, value in self.params.items():
            if key.endswith("param"):
                assign_proto(layer, key, value)
                continue
            try:
                assign_proto(getattr(layer, _param_names[self.type_name] + "_param"), key, value)
            except (AttributeError, KeyError):
                assign_proto(layer, key, value)
        layers[self] = layer


class NetSpec:
    """Named tops: `n.conv1 = L.Convolution(n.data, ...)`; `n.to_proto()` emits the net."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named {name!r}") from None

    def __setitem__(self, key, value):
        self.tops[key] = value

    def __getitem__(self, item):
        return self.tops[item]

    def __delitem__(self, item):
        del self.tops[item]

    def __contains__(self, item):
        return item in self.tops

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def to_proto(self):
        names = {value: key for key, value in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`layers.<Type>(*bottoms, **params)`: a Top (or a tuple of them, or the
    Function itself for ntop=0) describing one layer of that Caffe type."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        return layer_fn


class Parameters:
    """`params.<Type>.<CONSTANT>`: enum values of `<Type>Parameter`, e.g. params.Pooling.MAX."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, name + "Parameter")

        class Param:
            def __getattr__(self, param_name):
                return getattr(message, param_name)

        return Param()


_param_names = param_name_dict()
layers = Layers()
params = Parameters()
