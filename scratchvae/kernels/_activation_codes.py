"""Activation name -> integer code. Kernels take the code, so each keeps one signature."""

RELU, LEAKY_RELU, TANH, SIGMOID, SOFTPLUS, ELU, IDENTITY = range(7)

ACTIVATION_CODES = {
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "tanh": TANH,
    "sigmoid": SIGMOID,
    "softplus": SOFTPLUS,
    "elu": ELU,
    "identity": IDENTITY,
}

LEAKY_SLOPE = 0.01  # leaky_relu slope for h < 0
ELU_ALPHA = 1.0     # elu alpha
