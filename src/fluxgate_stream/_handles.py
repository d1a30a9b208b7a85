"""``Closing``: what every handle that ends with ``close()`` does as a context manager."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["Closing"]


class Closing:
    """A handle whose ``with`` block returns the handle and ends with its ``close()``.

    ``close()`` is the subclass's, and must be idempotent: a ``with`` block may end a handle that
    was already closed inside it.
    """

    __slots__ = ()

    def close(self) -> None:
        """End what the handle stands for. Idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
