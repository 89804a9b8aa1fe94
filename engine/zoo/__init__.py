"""The model zoo's nets, written as Python and emitted as Caffe prototxt by tools/make_zoo (engine/tools/make_zoo.py).

Each module builds its nets' train_val NetParameter from the paper's tables;
the deploy net and the solver come with it (see spec.ZooNet).
"""

from . import cifar, densenet, googlenet, imagenet, mobilenet, resnet, resnext, senet, shufflenet

_BUILDERS = {build.__name__: build
             for module in (cifar, imagenet, googlenet, resnet, mobilenet, densenet, resnext, shufflenet, senet)
             for build in module.NETS}
ORDER = ["cifar10_quick", "alexnet", "caffenet", "zfnet", "vgg16", "vgg_cifar", "googlenet", "nin",
         "resnet18", "resnet50", "mobilenet_v1", "mobilenet_v2", "densenet121", "resnext50_32x4d",
         "shufflenet_v2_1x", "se_resnet50"]


def names():
    return list(ORDER)


def get(name):
    """The ZooNet called `name`."""
    try:
        return _BUILDERS[name]()
    except KeyError:
        raise KeyError(f"no zoo net '{name}' (known: {', '.join(ORDER)})") from None
