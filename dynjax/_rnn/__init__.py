from ._cells import (
    AbstractCell as AbstractCell,
    Cell as Cell,
    GRU as GRU,
    LSTM as LSTM,
    VanillaRNN as VanillaRNN,
)
from ._flossing import flossing_loss as flossing_loss
from ._spectrum import (
    gradient_propagation as gradient_propagation,
    GradientPropagation as GradientPropagation,
    rnn_spectrum as rnn_spectrum,
    RNNSpectrum as RNNSpectrum,
)
