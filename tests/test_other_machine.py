"""The "another machine" harness hides what it must: a test passing with it proves nothing is shared."""
from __future__ import annotations

import os
import subprocess
import sys

from other_machine import TESTS, OtherMachine


def test_a_command_on_the_other_machine_sees_none_of_the_drivers_files_and_the_driver_none_of_its(tmp_path):
    (tmp_path / "driver_file.txt").write_text("driver's")
    machine = OtherMachine(tmp_path)
    probe = ("import os, sys; home = os.environ['IWORKFLOW_HOME']; open(os.path.join(home, 'mine'), 'w').write('x');"
             "print([os.listdir(p) for p in sys.argv[1:]], os.getcwd() == os.environ['PWD'], home)")
    try:
        out = subprocess.run(machine.command([sys.executable, "-c", probe, os.environ["IWORKFLOW_HOME"], str(TESTS),
                                              str(tmp_path)]),
                             env=machine.env(dict(os.environ)), capture_output=True, text=True, timeout=60, check=True)
        listings, same_cwd, home = out.stdout.rsplit(" ", 2)
        assert listings == "[[], [], []]" and same_cwd == "True", out.stdout
        assert (tmp_path / "driver_file.txt").exists() and os.listdir(TESTS), "hidden only in its namespace"
        assert not os.path.exists(os.path.join(home.strip(), "mine")), "its own files stay on its machine"
    finally:
        machine.cleanup()
