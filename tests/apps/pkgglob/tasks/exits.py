"""A submodule that ends the process when imported."""

from pkgglob import mark

mark("exits")
raise SystemExit(3)
