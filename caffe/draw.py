"""pycaffe's caffe.draw, served by engine.draw (Graphviz DOT written directly, no pydot)."""

from engine.draw import (BLOB_STYLE, LAYER_STYLE_DEFAULT, NEURON_LAYER_STYLE, DotGraph, DrawError,  # noqa: F401
                         choose_color_by_layertype, draw_net, draw_net_to_file, get_edge_label,
                         get_layer_label, get_layer_lr_mult, get_pooling_types_dict, get_pydot_graph)

__all__ = ["BLOB_STYLE", "LAYER_STYLE_DEFAULT", "NEURON_LAYER_STYLE", "DotGraph", "DrawError",
           "choose_color_by_layertype", "draw_net", "draw_net_to_file", "get_edge_label", "get_layer_label",
           "get_layer_lr_mult", "get_pooling_types_dict", "get_pydot_graph"]
