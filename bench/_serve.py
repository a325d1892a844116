"""Server subprocesses: ``python -m bench._serve KIND PORT``, params in ``BENCH_PARAMS``.

Quart apps are served by Hypercorn (one worker, its asyncio worker: the code path of
``hypercorn module:app -w 1``), the Flask app by waitress. Both stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from bench import apps
from bench._http import HOST


def _hypercorn(app: object, port: int, *, uvloop: bool = False) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    if uvloop:  # Hypercorn's "uvloop" worker class (`hypercorn -k uvloop`)
        import uvloop as uv

        uv.run(main())
    else:
        asyncio.run(main())


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "steady":
        _hypercorn(apps.steady_app(), port)
    elif kind == "store_outage":
        _hypercorn(apps.outage_app(), port)
    elif kind == "api-quart":
        _hypercorn(apps.quart_api_app(), port)
    elif kind == "api-quart-uvloop":
        _hypercorn(apps.quart_api_app(), port, uvloop=True)
    elif kind == "api-waitress":
        import waitress

        # waitress's defaults (4 threads), as `waitress-serve` runs it.
        waitress.serve(apps.flask_api_app(), host=HOST, port=port, _quiet=True)
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main()
