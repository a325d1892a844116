"""A submodule of the allowed package: a reference must never import it."""

from pkgglob import mark

mark("side")


def job(*args: object, **kwargs: object) -> None:
    pass
