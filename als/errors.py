"""Exceptions raised by the ALS maths when a solve fails or values stop being finite."""


class SolveError(ArithmeticError):
    """A row's normal equations could not be solved (Cholesky failed or gave a non-finite result).

    With positive regularisation every system is positive definite, so this means the inputs
    held NaN or inf, or the values overflowed.
    """


class NonFiniteError(SolveError):
    """Training produced NaN or inf in the model arrays or the loss after an epoch."""
