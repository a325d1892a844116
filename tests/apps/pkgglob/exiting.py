"""An allowed module (``"pkgglob.exiting:*"``) whose import raises ``SystemExit``."""

from pkgglob import mark

mark("exiting")
raise SystemExit(4)


def job() -> None:  # never reached
    pass
