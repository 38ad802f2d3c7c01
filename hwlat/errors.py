"""The errors hwlat reports to its users: one line each, carrying the offending value and the way out.

The CLI turns any HwlatError into a single line on stderr and exit code 2; anything else is a bug.
"""


def one_line(text: str, limit: int = 2000) -> str:
    """text as one line of printable characters: newlines, escapes and other control characters
    from untrusted input (a file name, a model name) are shown escaped, never acted on."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class HwlatError(Exception):
    """Base of every error caused by the user's input rather than by hwlat itself."""


class InvalidInputError(HwlatError):
    """A model description, configuration or argument that hwlat cannot accept."""


class InvalidModelError(HwlatError):
    """An ONNX file that cannot be loaded, validated or represented in the graph IR."""


class UnsupportedOpError(InvalidModelError):
    """The model uses ops hwlat does not know; every one is named at once."""

    def __init__(self, ops: dict[str, int]):
        self.ops = dict(ops)
        listing = ", ".join(f"{op} (x{n})" for op, n in sorted(ops.items()))
        super().__init__(f"unsupported ops: {listing}")
