"""The course's neural-network math: pure forward/backward functions over an array-API `xp`.

activations (sigmoid, tanh, relu, leaky_relu, softmax, linear) · losses (from logits) · init ·
layers (dense) · dropout (inverted) · batchnorm (explicit state, cross-rank `reduce`) · model (the
L-layer network) · gradcheck.
"""
from .activations import get_activation
from .batchnorm import bn_backward, bn_forward, bn_infer, update_running
from .gradcheck import check_model, cost_and_grad, gradient_check
from .dropout import dropout_backward, dropout_forward, dropout_mask
from .init import init_bn_state, init_params
from .layers import dense_backward, dense_forward
from .losses import (
    LOSSES, LabelError, correct_count, encode_targets, loss_grad, loss_sum, predict_labels,
)
from .model import (
    Spec, backward, bn_state_layout, evaluate, forward, l2_cost, layout, make_spec, predict,
    resolve_output,
)

__all__ = [
    "LOSSES", "LabelError", "Spec", "backward", "bn_backward", "bn_forward", "bn_infer",
    "bn_state_layout", "check_model", "correct_count", "cost_and_grad", "dense_backward",
    "dense_forward", "dropout_backward", "dropout_forward", "dropout_mask", "encode_targets",
    "evaluate", "forward", "get_activation",
    "gradient_check", "init_bn_state", "init_params", "l2_cost", "layout", "loss_grad",
    "loss_sum", "make_spec", "predict", "predict_labels", "resolve_output", "update_running",
]
