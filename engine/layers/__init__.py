"""Layer implementations, one family per module.

Every module in this package is imported here, so that each layer class
registers itself under its Caffe type name; adding a family means adding a
file, nothing else.
"""

import importlib
import pkgutil

from .base import Layer, layer_class, layer_types, register_layer

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Layer", "layer_class", "layer_types", "register_layer"]
