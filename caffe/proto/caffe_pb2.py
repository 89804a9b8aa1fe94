"""pycaffe's generated module, served by the engine's.

Importing this file replaces its own entry in sys.modules with
`engine.caffe_pb2`, so `from caffe.proto import caffe_pb2` and
`import caffe.proto.caffe_pb2` both hand back that one module: a second copy
of the generated code would try to register the `caffe.*` descriptors again
and give classes that fail isinstance checks against the engine's.
"""

import sys

import engine.caffe_pb2 as _engine_pb2
from engine.caffe_pb2 import *  # noqa: F401,F403  (for readers that exec this file directly)

sys.modules[__name__] = _engine_pb2
