"""The allowed package's ``__main__``: a reference must never run it."""

from pkgglob import mark

mark("__main__")
