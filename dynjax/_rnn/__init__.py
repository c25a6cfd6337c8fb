from ._cells import (
    AbstractCell as AbstractCell,
    Cell as Cell,
    GRU as GRU,
    LSTM as LSTM,
    VanillaRNN as VanillaRNN,
)
from ._flossing import flossing_loss as flossing_loss
from ._signal import (
    DeepStack as DeepStack,
    depth_lyapunov as depth_lyapunov,
    DepthLyapunov as DepthLyapunov,
    residual_stack as residual_stack,
    signal_propagation as signal_propagation,
    SignalPropagation as SignalPropagation,
)
from ._slow_points import (
    find_slow_points as find_slow_points,
    sample_guesses as sample_guesses,
    SlowPoints as SlowPoints,
)
from ._spectrum import (
    gradient_propagation as gradient_propagation,
    GradientPropagation as GradientPropagation,
    rnn_spectrum as rnn_spectrum,
    RNNSpectrum as RNNSpectrum,
)
from ._tasks import delayed_recall as delayed_recall, flip_flop as flip_flop
