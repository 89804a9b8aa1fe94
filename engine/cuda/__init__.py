"""GPU-only code: CUDA kernels for CuPy and the cuDNN bridge.

Layers keep one NumPy/CuPy body where array operations serve; where speed
needs a dedicated kernel (pooling, LRN, the solver's update, convolution
through cuDNN), the layer calls into this package when its arrays are CuPy
arrays, and the tests compare the two paths on the GPU. Nothing here imports
CuPy until a kernel is first asked for, so CPU-only installs never need it.
"""

_KERNELS = {}


def elementwise(name, in_params, out_params, body, **options):
    """A cached `cupy.ElementwiseKernel`, compiled on first use."""
    kernel = _KERNELS.get(name)
    if kernel is None:
        import cupy

        kernel = _KERNELS[name] = cupy.ElementwiseKernel(in_params, out_params, body, name, **options)
    return kernel
