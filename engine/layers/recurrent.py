"""RNN and LSTM: Caffe's RecurrentLayer, computed directly instead of unrolled.

Caffe builds a hidden net with one layer group per time step; the arithmetic
below is that net's, step for step, so outputs and gradients agree with it:

- bottoms: x (T, N, ...), cont (T, N), optional x_static (N, ...), and with
  `expose_hidden` the initial states (1, N, H) (LSTM: h_0 then c_0);
- tops: the output sequence (T, N, H), and with `expose_hidden` the final
  states (LSTM: h_T then c_T);
- cont_t multiplies the previous hidden state before it enters step t (and,
  for the LSTM, the forget gate), so a 0 starts a fresh sequence;
- without `expose_hidden` the final state of one forward pass is the initial
  state of the next (Caffe copies h_T / c_T into h_0 / c_0), and no gradient
  crosses batches;
- with `expose_hidden`, as in Caffe, the initial states get no gradient and
  the diffs of the final-state tops are not used.
"""

import logging

from ..fillers import fill
from .base import Layer, register_layer
from .lstm_unit import lstm_step, lstm_step_backward

log = logging.getLogger("engine")


class RecurrentLayer(Layer):
    """Shared set-up, shapes, state carrying and blob plumbing of RNN and LSTM."""

    state_names = ("h",)  # recurrent states, in Caffe's bottom/top order

    def __init__(self, param, phase=None):
        super().__init__(param, phase)
        exposed = len(self.state_names) if param.recurrent_param.expose_hidden else 0
        self.min_bottom_blobs = 2 + exposed
        self.max_bottom_blobs = 3 + exposed
        self.exact_num_top_blobs = 1 + exposed

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1  # sequence indicators never take a gradient

    def setup(self, bottom, top):
        p = self.param.recurrent_param
        self._check_sequence(bottom)
        self.steps, self.streams = bottom[0].shape[:2]
        self.check(p.num_output > 0, "num_output must be positive")
        self.hidden = p.num_output
        self.expose = p.expose_hidden
        self.static = len(bottom) > 2 + (len(self.state_names) if self.expose else 0)
        if self.static:
            self.check(bottom[2].num_axes >= 1 and bottom[2].shape[0] == self.streams,
                       f"the static input bottom[2] must be shaped (N, ...) with N = {self.streams}; "
                       f"got {bottom[2].shape}")
        self.input_dim = bottom[0].count_range(2)
        self.static_dim = bottom[2].count_range(1) if self.static else 0
        if not len(self.blobs):
            for shape, filler in self.param_specs(p):
                self.blobs.add_blob(*shape)
                fill(self.blobs[-1].data, filler)
        self.carried = None

    def _check_sequence(self, bottom):
        self.check(bottom[0].num_axes >= 2, "bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...)")
        self.check(bottom[1].num_axes == 2, "bottom[1] must have exactly 2 axes -- (#timesteps, #streams)")
        self.check(bottom[1].shape == bottom[0].shape[:2],
                   f"bottom[1] {bottom[1].shape} must be (#timesteps, #streams) of bottom[0] {bottom[0].shape}")

    def reshape(self, bottom, top):
        self._check_sequence(bottom)
        self.check(bottom[0].shape[0] == self.steps,
                   f"input number of timesteps changed ({self.steps} at set-up, now {bottom[0].shape[0]})")
        self.streams = bottom[0].shape[1]
        self.check(bottom[0].count_range(2) == self.input_dim,
                   f"Input size incompatible with inner product parameters: bottom[0] {bottom[0].shape} "
                   f"has {bottom[0].count_range(2)} features per step, the weights expect {self.input_dim}")
        if self.static:
            self.check(bottom[2].shape[0] == self.streams and bottom[2].count_range(1) == self.static_dim,
                       f"static input {bottom[2].shape} must be ({self.streams}, {self.static_dim} values)")
        state_shape = (1, self.streams, self.hidden)
        if self.expose:
            first = 3 if self.static else 2
            for i, blob in enumerate(bottom[first:], start=first):
                self.check(blob.shape == state_shape,
                           f"bottom[{i}] shape must match hidden state input shape: {state_shape}; got {blob.shape}")
            for blob in top[1:]:
                blob.reshape(state_shape)
        top[0].reshape((self.steps, self.streams, self.hidden))

    # -- the pieces subclasses use ---------------------------------------------------
    def _initial_states(self, bottom):
        xp, dtype = bottom[0].xp, bottom[0].dtype
        if self.expose:
            first = 3 if self.static else 2
            return [blob.data[0] for blob in bottom[first:]]
        shape = (self.streams, self.hidden)
        if self.carried is None or self.carried[0].shape != shape:
            self.carried = [xp.zeros(shape, dtype=dtype) for _ in self.state_names]
        return self.carried

    def _final_states(self, top, states):
        if self.expose:
            for blob, state in zip(top[1:], states):
                blob.data[0] = state
        else:
            self.carried = [state.copy() for state in states]

    def _inputs(self, bottom):
        """x as (T*N, I), cont as (T, N, 1), x_static as (N, S) or None."""
        x = bottom[0].data.reshape(self.steps * self.streams, self.input_dim)
        cont = bottom[1].data.reshape(self.steps, self.streams, 1).astype(x.dtype)
        static = bottom[2].data.reshape(self.streams, self.static_dim) if self.static else None
        return x, cont, static

    def _input_gradients(self, bottom, propagate_down, dpre, names):
        """Backward through the input transforms, given the diffs of the step pre-activations.

        `dpre` is (T, N, G): the gradient of every step's summed input. The
        weight, bias and static-weight blobs are named by `names`.
        """
        x, _, static = self._inputs(bottom)
        flat = dpre.reshape(self.steps * self.streams, -1)
        w, b, ws = (self.index.get(name) for name in names)
        self._accumulate(w, flat.T.dot(x))
        self._accumulate(b, flat.sum(axis=0))
        if propagate_down[0]:
            bottom[0].diff[...] = flat.dot(self.blobs[w].data).reshape(bottom[0].shape)
        if self.static:
            summed = dpre.sum(axis=0)
            self._accumulate(ws, summed.T.dot(static))
            if propagate_down[2]:
                bottom[2].diff[...] = summed.dot(self.blobs[ws].data).reshape(bottom[2].shape)
        if self.expose:
            # Caffe shares only the data of the initial-state bottoms: no gradient reaches them.
            first = 3 if self.static else 2
            for i in range(first, len(bottom)):
                if propagate_down[i]:
                    bottom[i].diff[...] = 0

    def _accumulate(self, index, grad):
        if index is not None and self.param_propagate_down[index]:
            self.blobs[index].diff[...] += grad

    def _weight(self, name):
        return self.blobs[self.index[name]].data

    def _transformed_input(self, bottom, weight, bias, static_weight):
        """W x_t + b for all steps at once (T, N, G), and W_static x_static (N, G) or 0."""
        x, _, static = self._inputs(bottom)
        pre = (x.dot(self._weight(weight).T) + self._weight(bias)).reshape(self.steps, self.streams, -1)
        extra = static.dot(self._weight(static_weight).T) if self.static else 0
        return pre, extra

    def _debug(self, direction, layer, kind, blob, array):
        if self.param.recurrent_param.debug_info:
            mean = float(abs(array).mean()) if array.size else 0.0
            what = "data" if direction == "Forward" else "diff"
            log.info("    [%s] Layer %s_%s, %s blob %s %s: %g", direction, self.name, layer, kind, blob, what, mean)

    def _check_backward(self, propagate_down):
        if propagate_down[1]:
            raise self.error("Cannot backpropagate to sequence indicators.")

    def _name_params(self, names):
        self.index = {name: i for i, name in enumerate(names)}


@register_layer
class RNNLayer(RecurrentLayer):
    """h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]);
    o_t = tanh(W_ho h_t + b_o); the top is o.

    Parameter blobs, in Caffe's order: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o.
    """

    type = "RNN"

    def _names(self):
        return ["W_xh", "b_h"] + (["W_xh_static"] if self.static else []) + ["W_hh", "W_ho", "b_o"]

    def param_specs(self, p):
        h, names = self.hidden, self._names()
        shapes = {"W_xh": (h, self.input_dim), "b_h": (h,), "W_xh_static": (h, self.static_dim),
                  "W_hh": (h, h), "W_ho": (h, h), "b_o": (h,)}
        return [(shapes[n], p.bias_filler if n.startswith("b_") else p.weight_filler) for n in names]

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self._name_params(self._names())

    def forward(self, bottom, top):
        xp = bottom[0].xp
        pre, extra = self._transformed_input(bottom, "W_xh", "b_h", "W_xh_static")
        _, cont, _ = self._inputs(bottom)
        (h,) = self._initial_states(bottom)
        w_hh = self._weight("W_hh")
        self.conted = xp.empty_like(pre)
        self.h = xp.empty_like(pre)
        for t in range(self.steps):
            self.conted[t] = cont[t] * h
            h = xp.tanh(self.conted[t].dot(w_hh.T) + pre[t] + extra)
            self.h[t] = h
            self._debug("Forward", f"h_neuron_{t + 1}", "top", f"h_{t + 1}", h)
        self._final_states(top, [h])
        flat = self.h.reshape(-1, self.hidden)
        self.out = xp.tanh(flat.dot(self._weight("W_ho").T) + self._weight("b_o"))
        top[0].data[...] = self.out.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        self._check_backward(propagate_down)
        _, cont, _ = self._inputs(bottom)
        d_out = top[0].diff.reshape(-1, self.hidden) * (1 - self.out * self.out)
        self._accumulate(self.index["W_ho"], d_out.T.dot(self.h.reshape(-1, self.hidden)))
        self._accumulate(self.index["b_o"], d_out.sum(axis=0))
        dh_out = d_out.dot(self._weight("W_ho")).reshape(self.h.shape)
        w_hh = self._weight("W_hh")
        dpre = bottom[0].xp.empty_like(self.h)
        dh_next = 0
        for t in reversed(range(self.steps)):
            dpre[t] = (dh_out[t] + dh_next) * (1 - self.h[t] * self.h[t])
            self._debug("Backward", f"h_neuron_{t + 1}", "bottom", f"h_neuron_input_{t + 1}", dpre[t])
            dh_next = cont[t] * dpre[t].dot(w_hh)
        flat = dpre.reshape(-1, self.hidden)
        self._accumulate(self.index["W_hh"], flat.T.dot(self.conted.reshape(-1, self.hidden)))
        self._input_gradients(bottom, propagate_down, dpre, ("W_xh", "b_h", "W_xh_static"))


@register_layer
class LSTMLayer(RecurrentLayer):
    """Long short-term memory over the gates i, f, o, g (Caffe's order).

    gates_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static],
    then the LSTMUnit step; the top is h. Parameter blobs, in Caffe's order:
    W_xc (4H, I), b_c (4H), [W_xc_static (4H, S)], W_hc (4H, H).
    """

    type = "LSTM"
    state_names = ("h", "c")

    def _names(self):
        return ["W_xc", "b_c"] + (["W_xc_static"] if self.static else []) + ["W_hc"]

    def param_specs(self, p):
        g, names = 4 * self.hidden, self._names()
        shapes = {"W_xc": (g, self.input_dim), "b_c": (g,), "W_xc_static": (g, self.static_dim),
                  "W_hc": (g, self.hidden)}
        return [(shapes[n], p.bias_filler if n == "b_c" else p.weight_filler) for n in names]

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self._name_params(self._names())

    def forward(self, bottom, top):
        xp = bottom[0].xp
        pre, extra = self._transformed_input(bottom, "W_xc", "b_c", "W_xc_static")
        _, cont, _ = self._inputs(bottom)
        h, c = self._initial_states(bottom)
        w_hc = self._weight("W_hc")
        shape = (self.steps, self.streams, self.hidden)
        self.conted, self.c_prev, self.tanh_c = (xp.empty(shape, dtype=pre.dtype) for _ in range(3))
        self.acts = xp.empty_like(pre)
        for t in range(self.steps):
            self.conted[t] = cont[t] * h
            self.c_prev[t] = c
            gates = self.conted[t].dot(w_hc.T) + pre[t] + extra
            c, h, self.acts[t], self.tanh_c[t] = lstm_step(c, gates, cont[t])
            top[0].data[t] = h
            self._debug("Forward", f"unit_{t + 1}", "top", f"c_{t + 1}", c)
            self._debug("Forward", f"unit_{t + 1}", "top", f"h_{t + 1}", h)
        self._final_states(top, [h, c])

    def backward(self, top, propagate_down, bottom):
        self._check_backward(propagate_down)
        xp = bottom[0].xp
        _, cont, _ = self._inputs(bottom)
        w_hc = self._weight("W_hc")
        dpre = xp.empty_like(self.acts)
        dh_next, dc_next = 0, xp.zeros_like(self.c_prev[0])
        for t in reversed(range(self.steps)):
            dh = top[0].diff[t] + dh_next
            dc_next, dpre[t] = lstm_step_backward(dc_next, dh, self.c_prev[t], self.acts[t], self.tanh_c[t])
            self._debug("Backward", f"unit_{t + 1}", "bottom", f"gate_input_{t + 1}", dpre[t])
            dh_next = cont[t] * dpre[t].dot(w_hc)
        flat = dpre.reshape(-1, 4 * self.hidden)
        self._accumulate(self.index["W_hc"], flat.T.dot(self.conted.reshape(-1, self.hidden)))
        self._input_gradients(bottom, propagate_down, dpre, ("W_xc", "b_c", "W_xc_static"))
