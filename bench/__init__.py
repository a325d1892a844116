"""Benchmarks for quart_sched against raw APScheduler, Flask-APScheduler and quart-tasks.

Run ``python -m bench`` (``--help`` for the options). Every measurement runs in a fresh
subprocess, servers bind to 127.0.0.1 only, and nothing is installed: the peers come from
the ``bench`` extra (``pip install -e '.[bench]'``).
"""
