"""The `mouse` command: per-command help, --version, one-line config errors, the resume defaults.

Help and parsing run without torch (the help answers at once); the tests that run
the command's parser do so in this process, the import check in a fresh one.
"""

from __future__ import annotations

import json
import subprocess
import re
import sys
from pathlib import Path

import pytest

from mouse import __version__
from mouse.cli import main, parse_run_config
from mouse.config import EnvConfig, RunConfig, TrainConfig, save_config
from mouse.losses import SpLossConfig

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("run", "learner", "actor", "eval", "plot")


def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code in (0, None)
    return capsys.readouterr().out


def error_line(capsys, *argv) -> str:
    """The one line a bad command line ends with (SystemExit's message or stderr)."""
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    text = str(e.value.code) if not isinstance(e.value.code, int) else capsys.readouterr().err
    return text.strip()


def test_version_is_the_package_version(capsys):
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"mouse {__version__}"
    declared = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert declared and declared.group(1) == __version__


def test_top_level_help_lists_the_commands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {c} " in out for c in COMMANDS), out


def test_each_command_has_its_own_flags(capsys):
    run, learner = help_text(capsys, "run"), help_text(capsys, "learner")
    actor, ev = help_text(capsys, "actor"), help_text(capsys, "eval")
    assert run != learner
    assert "--inproc" in run and "--inproc" not in learner
    assert "--config" in run and "--config" in learner
    assert "--env.env-id" in learner and "--env.env-id" not in actor
    assert "--learner STR" in actor and "--train." not in actor
    for flag in ("RUN_DIR", "--episodes", "--head", "--checkpoint", "--video"):
        assert flag in ev, flag
    assert "{acting,dqn,vec_dqn,sp}" in ev and "{best,last}" in ev


def test_help_shows_choices_and_no_internal_wording(capsys):
    text = help_text(capsys, "run")
    assert "{ce,ce-soft-fwd,ce-soft-bwd,js,kl-fwd,kl-bwd}" in text  # sp loss types as choices
    assert "{mse,mae}" in text
    for cmd in COMMANDS:
        t = help_text(capsys, cmd)
        for word in ("polyak_update", "externally", "__tyro", "dummy-inner"):
            assert word not in t, (cmd, word)


def test_help_imports_neither_torch_nor_zmq_nor_gymnasium():
    code = ("import sys\nfrom mouse.cli import main\n"
            "for cmd in ([], ['run'], ['learner'], ['actor'], ['eval'], ['plot']):\n"
            "    try:\n        main([*cmd, '--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'zmq', 'gymnasium', 'tensordict', 'wandb') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out[-2000:]


def test_a_misspelt_env_id_or_bad_env_kwargs_are_refused_before_torch_is_imported():
    """`mouse run` and `mouse learner` check the id (and make the env when it is given
    keyword arguments) with gymnasium alone: a second, not the learner's imports; the mouse/
    and ALE ids are registered for that check."""
    code = ("import sys\nfrom mouse.cli import main\n"
            "for cmd in (['run'], ['learner']):\n"
            "    for env_id in ('NoSuchEnv-v0', 'ALE/Pongg-v5'):\n"
            "        try:\n            main([*cmd, '--env.env-id', env_id])\n"
            "        except SystemExit as e:\n            print(e.code)\n"
            "    try:\n        main([*cmd, '--env.env-id', 'FrozenLake-v1', '--env.env-kwargs', '{\"map\": 1}'])\n"
            "    except SystemExit as e:\n        print(e.code[:65])\n"
            "from mouse.env_ids import check_env_id\n"
            "check_env_id('mouse/CueRecall-v0'); check_env_id('ALE/Pong-v5'); check_env_id('PongNoFrameskip-v4')\n"
            "print(sorted(m for m in ('torch', 'tensordict', 'zmq') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True).stdout.strip().splitlines()
    assert out[-1] == "[]", out
    assert out[:-1] == 2 * ["error: env.env_id: cannot make env 'NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist.",
                            "error: env.env_id: cannot make env 'ALE/Pongg-v5': Environment `Pongg` doesn't exist "
                            "in namespace ALE. Did you mean: `Pong`?",
                            """error: env.env_kwargs: 'FrozenLake-v1' does not accept {"map": 1}"""], out


@pytest.mark.parametrize("argv, names", [
    (["run", "--train.sp.temperature", "-1"], "train.sp"),
    (["learner", "--model.hidden-dim", "0"], "hidden_dim"),
    (["run", "--num-actors", "-1"], "num_actors"),
    (["learner", "--learner.replay-ratio", "0"], "learner.replay_ratio"),
    (["run", "--train.dqn.weight", "0"], "train.dqn.weight"),
])
def test_config_errors_are_one_line_naming_the_field(capsys, argv, names):
    line = error_line(capsys, *argv)
    assert line.startswith("error: ") and "\n" not in line, line
    assert names in line and "tyro" not in line and "Traceback" not in line, line


def test_unknown_command_is_one_line(capsys):
    line = error_line(capsys, "trian")
    assert line.startswith("error: unknown command 'trian'") and "run, learner" in line


def test_run_dir_of_a_run_sets_the_defaults(tmp_path):
    """`mouse learner --run-dir RUN` without flags continues RUN with RUN's own config."""
    saved = RunConfig(env=EnvConfig(env_id="FrozenLake-v1", env_kwargs='{"map_name": "8x8"}'),
                      train=TrainConfig(sp=SpLossConfig(weight=1.0)), run_dir=str(tmp_path))
    save_config(saved, tmp_path / "config.json")
    assert parse_run_config(["--run-dir", str(tmp_path)]) == saved
    changed = parse_run_config([f"--run-dir={tmp_path}", "--budget.max-env-steps", "9"])
    assert changed.env == saved.env and changed.budget.max_env_steps == 9
    # --config names the defaults explicitly and wins over the run directory's
    other = RunConfig(num_actors=7)
    save_config(other, tmp_path / "other.json")
    assert parse_run_config(["--run-dir", str(tmp_path), "--config", str(tmp_path / "other.json")]) \
        .num_actors == 7
    assert parse_run_config(["--run-dir", str(tmp_path / "new")]).env.env_id == "CartPole-v1"


def test_config_history_file_is_json_lines(tmp_path):
    """(The format tests/learner/test_main.py relies on when it reads the history.)"""
    from learner.resume import record_start

    saved = RunConfig()
    record_start(tmp_path, None, saved)
    record_start(tmp_path, saved, RunConfig(num_actors=5))
    lines = [json.loads(x) for x in (tmp_path / "config-history.jsonl").read_text().splitlines()]
    assert [x["resume"] for x in lines] == [False, True]
    assert lines[1]["changed"] == {"num_actors": [2, 5]}


def test_the_mouse_script_exits_0_after_a_finished_run(tmp_path):
    """The installed ``mouse`` script (what ./dev.sh run and the deploy scripts call), not
    ``python -m mouse``: a finished run exits 0, and no summary dict is printed as an error."""
    from tests.run_helpers import small_run_flags

    script = Path(sys.executable).parent / "mouse"
    r = subprocess.run([str(script), "run", "--inproc", "--run-dir", str(tmp_path / "run"), "--num-actors", "1",
                        *small_run_flags(2), "--budget.max-env-steps", "400"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "{'best_eval_return'" not in r.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["env_steps"] >= 400


def test_a_closed_stdout_silences_the_console_not_the_run(tmp_path):
    """`mouse run ... | head -1`: the reader leaves after one line; the run goes on to its budget,
    writes its summary and exits 0 (it died with BrokenPipeError)."""
    from tests.run_helpers import small_run_flags

    p = subprocess.Popen([sys.executable, "-m", "mouse", "run", "--inproc", "--run-dir", str(tmp_path / "run"),
                          "--num-actors", "1", *small_run_flags(2), "--budget.max-env-steps", "1500"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.readline()  # the first console line
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(300) == 0, err[-3000:]
    assert "Exception in thread" not in err
    assert "Logging error" not in err, err[-3000:]  # torchrl's stdout logger is quiet below warnings
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["env_steps"] >= 1500
