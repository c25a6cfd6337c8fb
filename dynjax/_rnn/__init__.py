from ._cells import Cell as Cell, GRU as GRU, LSTM as LSTM, VanillaRNN as VanillaRNN
