"""Recurrent and deep networks as dynamical systems.

Cells as driven maps `h_{t+1} = F(h_t, u_{t+1})`: `VanillaRNN`, `GRU` and `LSTM`
are final cells with the standard equations (those of `eqx.nn.GRUCell` /
`eqx.nn.LSTMCell` for the gated ones), keyed initializers with an explicit gain,
token-id or real-vector inputs and a linear readout (`cell.predict(inputs)`);
`Cell` turns any equinox cell with `__call__(u, h)` into one. Every dynjax verb
for driven maps applies: `dynjax.trajectory(cell, h0, inputs=...)`,
`dynjax.lyapunov_spectrum(cell, h0, inputs=...)`, `dynjax.jacobian(cell, h, u=...)`,
and the network verbs `dynjax.rnn_spectrum`, `dynjax.gradient_propagation`,
`dynjax.flossing_loss`, `dynjax.find_slow_points`.

Depth as time: `DeepStack` (a deep random network driven by one key per layer),
`residual_stack` (a residual network as the Euler map of a neural ODE), with the
verbs `dynjax.signal_propagation` and `dynjax.depth_lyapunov`.

Tasks generated in code with a key: `flip_flop`, `delayed_recall`.
"""

from .._rnn import (
    AbstractCell as AbstractCell,
    Cell as Cell,
    DeepStack as DeepStack,
    delayed_recall as delayed_recall,
    flip_flop as flip_flop,
    GRU as GRU,
    LSTM as LSTM,
    residual_stack as residual_stack,
    VanillaRNN as VanillaRNN,
)
