"""Converters for layers of Caffe's forks, under the forks' type names."""
