"""Exporters that turn a built Net into other frameworks' formats (ONNX)."""
