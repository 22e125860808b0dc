"""The holiday-peak simulator: open-loop gRPC load against a live passgate (or the echo server).

`python -m loadtest --help` for the command line; `loadtest.run.run_load(LoadConfig(...))` from
code. See loadtest/README.md.
"""
