from ._likelihood import (
    DiffusionLikelihood as DiffusionLikelihood,
    probability_flow_log_likelihood as probability_flow_log_likelihood,
)
from ._sample import (
    DiffusionSamples as DiffusionSamples,
    probability_flow_sample as probability_flow_sample,
    ProbabilityFlow as ProbabilityFlow,
    reverse_sde_sample as reverse_sde_sample,
)
from ._score import score_matching_loss as score_matching_loss
from ._sde import (
    AbstractSDE as AbstractSDE,
    SubVPSDE as SubVPSDE,
    VESDE as VESDE,
    VPSDE as VPSDE,
)
