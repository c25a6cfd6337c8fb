"""Recurrent networks as driven maps `h_{t+1} = F(h_t, u_{t+1})`.

`VanillaRNN`, `GRU` and `LSTM` are final cells with the standard equations (those of
`eqx.nn.GRUCell` / `eqx.nn.LSTMCell` for the gated ones), keyed initializers with an
explicit gain, token-id or real-vector inputs and a linear readout; `Cell` turns any
equinox cell with `__call__(u, h)` into a driven map. Every dynjax verb for driven
maps applies: `dynjax.trajectory(cell, h0, inputs=...)`,
`dynjax.lyapunov_spectrum(cell, h0, inputs=...)`, `dynjax.jacobian(cell, h, u=...)`.
"""

from .._rnn import (
    AbstractCell as AbstractCell,
    Cell as Cell,
    GRU as GRU,
    LSTM as LSTM,
    VanillaRNN as VanillaRNN,
)
