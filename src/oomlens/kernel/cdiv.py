"""C integer division: the kernel's `/` truncates toward zero; Python's `//` floors."""


def c_div(numerator: int, denominator: int) -> int:
    """`numerator / denominator` as C computes it for signed integers."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient
