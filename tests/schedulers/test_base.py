"""Walltimes, resources from the spec, $(LAUNCHER) forms, options, command running, adapter choice."""
from __future__ import annotations

import re

import pytest

from legato.errors import LegatoError
from legato.schedulers import (
    ADAPTERS,
    JobState,
    Resources,
    parse_walltime,
    scheduler_for,
)
from legato.schedulers.base import expand_indices, render_options, run_command
from legato.schedulers.flux import Flux
from legato.schedulers.slurm import Slurm
from tests.schedulers.fake import FakeRunner


@pytest.mark.parametrize("value, seconds", [
    ("01:30:00", 5400), ("30:00", 1800), ("1-02:03:04", 93784), ("2-00", 172800), ("1-12:30", 131400),
    (90, 5400), ("45", 2700), (0, 0), ("inf", 0), ("UNLIMITED", 0), (None, None), ("", None), (" 00:00:05 ", 5),
    ("100:00:00", 360000),
])
def test_walltime_forms(value, seconds):
    assert parse_walltime(value) == seconds


@pytest.mark.parametrize("value", ["abc", "1:2:3:4", -5, 1.5, "10m", "1-", True])
def test_bad_walltime_names_the_value(value):
    with pytest.raises(LegatoError, match="walltime"):
        parse_walltime(value)


def test_run_keys_override_batch_defaults():
    batch = {"nodes": 4, "procs": 16, "walltime": "02:00:00", "qos": "normal", "reservation": "r1"}
    run = {"nodes": "2", "procs": "", "cores per task": 3, "gpus": 0, "walltime": 15, "exclusive": "True", "qos": "high"}
    res = Resources.from_spec(batch, run)
    assert res == Resources(nodes=2, procs=16, gpus=None, cores_per_task=3, walltime="15", exclusive=True,
                            reservation="r1", qos="high")
    assert res.seconds == 900


@pytest.mark.parametrize("exclusive, expected", [
    (True, True), (False, False), ("false", False), ("yes", True), ({"allocation": True, "launcher": False}, True),
    (None, False),
])
def test_exclusive_forms(exclusive, expected):
    assert Resources.from_spec({}, {"exclusive": exclusive}).exclusive is expected


@pytest.mark.parametrize("run, message", [
    ({"nodes": "$(NODES)"}, "nodes must be a whole number"),
    ({"procs": -2}, "procs must not be negative"),
    ({"walltime": "soon"}, "walltime 'soon'"),
    ({"exclusive": "maybe"}, "exclusive must be true or false"),
])
def test_bad_resources_are_user_errors(run, message):
    with pytest.raises(LegatoError, match=message):
        Resources.from_spec({}, run)


def test_render_options():
    options = {"mem": "4G", "requeue": True, "hold": False, "C": "haswell", "-w": "node1", "comment": "a b",
               "setattr": {"system.x": 1, "user.y": "z"}, "l": ["mem=4gb", "place=pack"], "none": None}
    assert render_options(options) == [
        "--mem=4G", "--requeue", "-C haswell", "-w node1", '--comment="a b"', "--setattr=system.x=1",
        "--setattr=user.y=z", "-l mem=4gb", "-l place=pack"]
    assert render_options({"app": "big"}, dash="-") == ["-app big"]
    assert render_options(None) == []


@pytest.mark.parametrize("spec, tasks", [
    ("4-5%2", [4, 5]), ("5,7%1", [5, 7]), ("1-7:2", [1, 3, 5, 7]), ("[3-4]", [3, 4]), ("9", [9]), ("0,2-3", [0, 2, 3]),
])
def test_array_index_ranges(spec, tasks):
    assert expand_indices(spec) == tasks


def test_scheduler_for_picks_the_adapter():
    assert scheduler_for({}) is None
    assert scheduler_for({"type": "local"}) is None
    assert isinstance(scheduler_for({"type": "SLURM", "queue": "pdebug"}), Slurm)
    assert set(ADAPTERS) == {"slurm", "flux", "lsf", "pbs"}
    with pytest.raises(LegatoError, match="batch.type 'sge' is not a known scheduler"):
        scheduler_for({"type": "sge"})


def test_shell_comes_from_the_batch_block():
    assert Slurm({}).shell == "/bin/bash"
    assert Slurm({"shell": "/bin/zsh"}).shell == "/bin/zsh"


# ---------------------------------------------------------------- $(LAUNCHER)

STEP = {"nodes": 2, "procs": 8, "cores per task": 2}


@pytest.mark.parametrize("cmd, expanded", [
    ("$(LAUNCHER) ./sim", "srun -n 8 -N 2 -c 2 ./sim"),
    ("$(LAUNCHER)[1n, 4p] ./a & $(LAUNCHER)[1n,4p] ./b", "srun -n 4 -N 1 -c 2 ./a & srun -n 4 -N 1 -c 2 ./b"),
    ("$(LAUNCHER)[1p, 1n] ./a", "srun -n 1 -N 1 -c 2 ./a"),
    ("$(LAUNCHER)[4p] ./a", "srun -n 4 -c 2 ./a"),
    ("$(LAUNCHER)[1, 2] ./a", "srun -n 2 -N 1 -c 2 ./a"),
    ("$(LAUNCHER)[2p] ./a; $(LAUNCHER) ./b", "srun -n 2 -c 2 ./a; srun -n 8 -N 2 -c 2 ./b"),
    ("echo no launcher", "echo no launcher"),
])
def test_slurm_launcher_forms(cmd, expanded):
    """Maestro's srun: procs before nodes, overrides in either order."""
    assert Slurm({}).expand_launchers(cmd, STEP) == expanded


def test_launcher_overrides_may_not_exceed_the_step():
    with pytest.raises(LegatoError, match="use 10 procs but the step asks for 8"):
        Slurm({}).expand_launchers("$(LAUNCHER)[6p] a; $(LAUNCHER)[4p] b", STEP)
    with pytest.raises(LegatoError, match="use 3 nodes"):
        Slurm({}).expand_launchers("$(LAUNCHER)[3n, 2p] a", STEP)


@pytest.mark.parametrize("override", ["4 cores", "1p, 2p", "2n", "1n, 1n, 2p", ""])
def test_bad_launcher_override_is_named(override):
    with pytest.raises(LegatoError, match=rf"\$\(LAUNCHER\)\[{re.escape(override)}\] is not one of the forms"):
        Slurm({}).expand_launchers(f"$(LAUNCHER)[{override}] a", STEP)


def test_launcher_ignores_the_batch_blocks_counts():
    """The batch block sizes the allocation; Maestro's launcher takes only the step's nodes and procs."""
    assert Slurm({"nodes": 4, "procs": 2}).expand_launchers("$(LAUNCHER) hostname", {"procs": 1}) == "srun -n 1 hostname"
    assert Slurm({"nodes": 4}).expand_launchers("$(LAUNCHER)[1p] hostname", {"procs": 1}) == "srun -n 1 hostname"


def test_lsf_launcher_writes_maestros_resource_set_keys():
    lsf = ADAPTERS["lsf"]({})
    assert lsf.expand_launchers("$(LAUNCHER) ./a", {"nodes": 1, "procs": 1, "cpus per rs": 8}) == \
        "jsrun --nrs 1 -b rs -a 1 -r 1 -c 8 ./a"
    run = {"procs": 4, "gpus": 2, "bind": "packed:4", "bind gpus": "none", "tasks per rs": 2, "rs per node": 2}
    assert lsf.expand_launchers("$(LAUNCHER)[2p] ./a", run) == "jsrun --nrs 2 -b packed:4 -g 2 -B none -a 2 -r 2 -c 1 ./a"


def test_flux_launcher_options():
    flux = Flux({"args": {"cpu-affinity": "per-task"}, "launcher_args": {"setattr": {"user.tag": "x"}}})
    assert flux.expand_launchers("$(LAUNCHER)[1n, 2p] a", {"nodes": 1, "procs": 2, "gpus": 1}) == \
        "flux run -N 1 -n 2 -g 1 -o cpu-affinity=per-task --setattr=user.tag=x a"


def test_every_adapter_has_a_launcher():
    run = {"nodes": 2, "procs": 4, "tasks per rs": 1, "cpus per rs": 4, "bind": "packed:4"}
    launched = {key: cls({}).expand_launchers("$(LAUNCHER) a", run) for key, cls in ADAPTERS.items()}
    assert launched == {"slurm": "srun -n 4 -N 2 a", "flux": "flux run -N 2 -n 4 a",
                        "lsf": "jsrun --nrs 4 -b packed:4 -a 1 -r 1 -c 4 a", "pbs": "mpiexec -n 4 a"}
    assert ADAPTERS["lsf"]({"launcher": "lrun"}).expand_launchers("$(LAUNCHER) a", run) == "lrun -N 2 -n 4 a"


# ---------------------------------------------------------------- running commands


def test_run_command_runs_and_reports_missing_tools(tmp_path):
    assert run_command(["sh", "-c", "pwd; cat"], input="in", cwd=str(tmp_path)).stdout == f"{tmp_path}\nin"
    with pytest.raises(LegatoError, match="no-such-sbatch: command not found"):
        run_command(["no-such-sbatch"])
    with pytest.raises(LegatoError, match="working folder .*missing does not exist"):
        run_command(["true"], cwd=str(tmp_path / "missing"))


def test_scheduler_errors_carry_the_schedulers_message(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n")
    slurm = Slurm({})
    slurm.run = FakeRunner().answer(stderr="sbatch: error: Batch job submission failed: Invalid account\n",
                                    returncode=1)
    with pytest.raises(LegatoError, match="sbatch failed: sbatch: error: Batch job submission failed: Invalid account"):
        slurm.submit(str(script), str(tmp_path))


def test_states_are_plain_strings():
    assert JobState.OUT_OF_MEMORY == "OUT_OF_MEMORY"
    assert [state.value for state in JobState][:3] == ["PENDING", "RUNNING", "COMPLETED"]
