"""ops/passgate.service starts run_cluster.py with flags it accepts, restarts it whenever it exits,
and stops it with a signal it drains on."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import run_cluster

UNIT = Path(__file__).resolve().parents[2] / "ops" / "passgate.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_starts_run_cluster_with_flags_it_accepts() -> None:
    service = _unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/.venv/bin/python") and argv[1] == "run_cluster.py"
    args = run_cluster.parse_args(argv[2:])
    assert str(args.data_dir) == "/var/lib/passgate" == f"/var/lib/{service['StateDirectory']}"
    assert args.host == "0.0.0.0" and args.seed_passes == 0
    assert service["WorkingDirectory"] == argv[0].removesuffix("/.venv/bin/python")


def test_the_unit_restarts_it_and_stops_it_by_draining() -> None:
    service = _unit()["Service"]
    assert service["Restart"] == "always"
    assert service["KillSignal"] == "SIGTERM"  # run_cluster.py drains on SIGINT and SIGTERM
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) >= 30
