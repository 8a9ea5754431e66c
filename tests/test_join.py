"""How actors on other machines find and join a learner, with real processes over TCP:
RUN_DIR/learner.address (written once bound, a reachable name, removed at exit), the
actor's connect deadline, and an actor bound to its run (`mouse actor --run-dir`)."""

from __future__ import annotations

import signal

from learner.address import this_host
from mouse.status import read_status
from mouse.transport import free_port_base
from tests.run_helpers import SMALL, Proc, wait_for


def test_address_file_connect_deadline_and_run_binding(tmp_path):
    run = tmp_path / "run"
    learner = Proc("learner", ["learner", "--run-dir", run, "--learner.host", "0.0.0.0",
                               "--learner.port", 0, *SMALL, "--budget.max-env-steps", 0,
                               "--budget.max-minutes", 3], tmp_path)
    procs = [learner]
    try:
        wait_for(lambda: (read_status(run / "status.json") or {}).get("state") == "running", 180,
                 "the learner running", [learner])
        port = read_status(run / "status.json")["address"].rsplit(":", 1)[1]
        # bound to 0.0.0.0, it tells actors a name other machines can reach
        assert (run / "learner.address").read_text().strip() == f"tcp://{this_host()}:{port}"

        address = f"tcp://127.0.0.1:{port}"
        keys = ("--keys", run / "keys")  # off loopback the learner requires the run's keys
        ours = Proc("ours", ["actor", "--learner", address, *keys, "--run-dir", f"{run}/../run/",
                             "--max-steps", 50, "--connect-timeout-s", 120], tmp_path)
        other = Proc("other", ["actor", "--learner", address, *keys, "--run-dir", tmp_path / "other-run",
                               "--connect-timeout-s", 120], tmp_path)
        nobody = Proc("nobody", ["actor", "--learner", f"tcp://127.0.0.1:{free_port_base()}",
                                 "--connect-timeout-s", 2], tmp_path)
        procs += [ours, other, nobody]
        # an actor of another run leaves that learner at once (a port reused by another run)
        assert other.wait(180) == 1 and "serves run directory" in other.err(), other.logs()
        # nobody answers: the actor gives up after its deadline with one line, no traceback
        assert nobody.wait(180) == 1, nobody.logs()
        assert "no answer from a learner" in nobody.err() and "Traceback" not in nobody.err()
        # the run's own actor (its directory spelled another way) joins and acts
        assert ours.wait(180) == 0, ours.logs()
        assert read_status(run / "status.json")["env_steps"] > 0

        learner.popen.send_signal(signal.SIGTERM)
        assert learner.wait(120) == 0, learner.logs()
        assert not (run / "learner.address").exists() and (run / "summary.json").exists()
    finally:
        for p in procs:
            p.kill_group()
