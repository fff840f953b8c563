"""``LocalSubnet.spawn``: a member runs as ``python -m <module>`` from the checkout it is given, behind the command
it is given (``bench/instructions.py`` runs the API worker and the miner from another checkout, under valgrind).

A real child process; what it prints lands in the member's log.
"""

from __future__ import annotations

import os
from pathlib import Path

from localnet.launcher import LocalSubnet

MODULE = "where_am_i"  # exists only in the other checkout below


def test_a_member_runs_from_the_given_checkout_behind_the_given_command(tmp_path: Path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / f"{MODULE}.py").write_text(
        "import os, sys\nprint('from', os.path.dirname(os.path.abspath(__file__)), 'mark', os.environ.get('MARK'))\n")
    net = LocalSubnet(tmp_path / "net", code_root=checkout, launchers={MODULE: ["env", "MARK=launched"]})
    process = net.spawn("probe", MODULE, dict(os.environ))
    assert process.wait(timeout=30) == 0
    log = (tmp_path / "net" / "logs" / "probe.log").read_text()
    assert f"from {checkout.resolve()} mark launched" in log


def test_without_them_a_member_runs_from_this_checkout(tmp_path: Path):
    net = LocalSubnet(tmp_path / "net")
    process = net.spawn("probe", MODULE, dict(os.environ))
    process.wait(timeout=30)
    assert process.returncode not in (None, 0)  # this checkout has no such module
    assert f"No module named {MODULE}" in (tmp_path / "net" / "logs" / "probe.log").read_text()
