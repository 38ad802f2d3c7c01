"""The errors hwlat reports to its users: one line each, carrying the offending value and the way out.

The CLI turns any HwlatError into a single line on stderr and exit code 2; anything else is a bug.
"""


def escape_line(text: str, limit: int = 2000) -> str:
    """text as one line of printable characters: newlines, escapes and other control characters
    from untrusted input (a file name, a model name) are shown escaped, never acted on."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class HwlatError(Exception):
    """Base of every error caused by the user's input rather than by hwlat itself."""

    def line(self) -> str:
        """The one line the CLI prints after `error: `."""
        return str(self)


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


class BackendError(HwlatError):
    """A backend (onnxruntime, TVM, an RPC server) failed on something hwlat handed it.

    The backend's exception stays whole as `__cause__` (and `cause`); str() carries its full text
    on one line, and `line()` the same cut to `limit` characters for the terminal.
    """

    def __init__(self, what: str, cause: BaseException, hint: str = "", limit: int = 300):
        self.what, self.cause, self.hint, self.limit = what, cause, hint, limit
        self.__cause__ = cause
        super().__init__(f"{what}: {one_line(cause, None)}{hint}")

    def line(self) -> str:
        return f"{self.what}: {one_line(self.cause, self.limit)}{self.hint}"


def one_line(e: BaseException, limit: int | None = 300) -> str:
    """An exception's message on one line (whitespace runs become one space; its type's name when
    it has none), cut to `limit` characters with "..." (None: whole)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."
