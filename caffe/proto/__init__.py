"""pycaffe's `caffe.proto` package: the message classes of Caffe's schema.

There is one schema in the process: `caffe.proto.caffe_pb2` is the very
module object `engine.caffe_pb2`, so messages made through either name are
the same classes and the descriptors are registered once.
"""

from . import caffe_pb2  # noqa: F401  (makes `caffe.proto.caffe_pb2` an attribute)

__all__ = ["caffe_pb2"]
