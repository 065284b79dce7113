"""aelab: transposed convolutions and convolutional autoencoders, as in the lecture.

The package reads top to bottom as the lecture does:
``ops`` (convolution and transposed convolution by hand) -> ``data`` -> ``models`` -> ``train``
-> ``evaluate`` -> ``figures``; ``cli`` is a thin layer over these functions.
"""

__version__ = "0.1.0"


class AelabError(Exception):
    """Base class of every error aelab raises for bad input; the message names the problem and the fix."""
