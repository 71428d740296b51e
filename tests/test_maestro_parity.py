"""Differential test: ``maestro run --dry`` against ``legato run --dry --layout flat`` on maestrowf's own samples.

Every case runs both tools on the same spec (and pgen) in one temporary folder and compares
what a Maestro user sees: whether the spec is accepted (by ``legato validate`` too), the
instance folders of every step, and the body of every instance's script (Maestro's scheduler
header is not compared: legato packs instances into jobs of its own). Git dependencies point at a local repository made by
the test instead of GitHub; Flux scripts are written by maestro with ``tests/maestro_flux_stub``
standing in for Flux's Python bindings. The specs are in ``tests/specs/maestro_samples``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests import maestro
from tests.test_cli_dry import legato

SAMPLES = Path(__file__).resolve().parent / "specs" / "maestro_samples"
FLUX_STUB = Path(__file__).resolve().parent / "maestro_flux_stub"
REPO_SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "batched_parameters"


@dataclass(frozen=True)
class Case:
    spec: str
    pgen: str | None = None
    pargs: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        parts = [Path(self.spec).stem] + ([Path(self.pgen).stem] if self.pgen else []) + list(self.pargs)
        return "+".join(parts)


SPECS = sorted(
    str(path.relative_to(SAMPLES)) for path in SAMPLES.rglob("*.y*ml") if not path.parts[-2] == "legato"
)
LULESH = "lulesh/lulesh_sample1_unix.yaml"
CASES = [Case(spec) for spec in SPECS] + [
    Case(LULESH, "parameterization/lulesh_custom_gen.py"),
    Case(LULESH, "parameterization/lulesh_itertools_pgen.py"),
    Case("legato/lulesh_montecarlo.yaml", "parameterization/lulesh_montecarlo_args.py"),
    Case("legato/lulesh_montecarlo.yaml", "parameterization/lulesh_montecarlo_args.py", ("seed:42", "trials:5")),
    Case("legato/custom_generator.yaml", "parameterization/custom_generator.py"),
    Case("batched_parameters/batched_parameters_demo.yaml", "batched_parameters/batched_demo_pgen.py",
         ("INDEX:param_combo", "CSV:batched_parameters/params.csv", "START:3", "NROWS:4")),
]
REJECTED = {
    "test_specs/duplicate_dependency.yml",  # a dependency named like a variable
    "test_specs/empty_variables.yml",  # OUTPUT_PATH: (empty)
    "test_specs/error_parameterized.yml",  # a label that is a list
    "test_specs/extra_study_params.yml",  # an unknown run key
    "test_specs/lulesh_sample1_unix.yml",  # a path dependency that does not exist
    "test_specs/missing_step.yml",
    "test_specs/missing_step_desc.yml",
}
"""The specs maestro rejects: checked first, so that a broken comparison cannot pass as two rejections."""
"""Not covered: ``parameterization/np_cheb_pgen_pargs.py`` needs numpy, which neither tool installs."""


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local stand-in for the LULESH repository that the lulesh samples clone, with their tag."""
    repo = tmp_path_factory.mktemp("origin") / "LULESH"
    repo.mkdir()
    run = {"cwd": repo, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q"], **run)
    (repo / "CMakeLists.txt").write_text("project(lulesh)\n")
    subprocess.run(["git", "add", "."], **run)
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "lulesh"], **run)
    subprocess.run(["git", "tag", "2.0.3"], **run)  # the tag the lulesh samples check out
    return repo


def workdir(tmp_path: Path, origin: Path) -> Path:
    """The samples copied so that both tools read the same files, with GitHub URLs pointing at ``origin``."""
    folder = tmp_path / "samples"
    shutil.copytree(SAMPLES, folder)
    shutil.copytree(REPO_SAMPLE, folder / "batched_parameters", ignore=shutil.ignore_patterns("studies", "campaign"))
    for spec in folder.rglob("*.y*ml"):
        spec.write_text(spec.read_text().replace("https://github.com/LLNL/LULESH.git", str(origin)))
    return folder


def pgen_args(case: Case) -> list[str]:
    args = ["--pgen", case.pgen] if case.pgen else []
    for item in case.pargs:
        args += ["--pargs", item]
    return args


def run_maestro(case: Case, cwd: Path) -> subprocess.CompletedProcess:
    env = maestro.env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FLUX_STUB), env.get("PYTHONPATH")]))
    return subprocess.run(
        [str(maestro.MAESTRO), "run", "--dry", "-y", "-fg", "-o", "maestro_out", case.spec, *pgen_args(case)],
        cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )


def step_names(spec: Path) -> list[str]:
    return [step["name"] for step in yaml.safe_load(spec.read_text())["study"]]


def scripts(root: Path, steps: list[str], header: bool) -> dict[str, str]:
    """Per instance folder (relative), the body of the script in it, with the study folder as ``<study>``."""
    found: dict[str, str] = {}
    for step in steps:
        for script in sorted((root / step).glob("**/*.sh")):
            folder = str(script.parent.relative_to(root))
            assert folder not in found, f"two scripts in {folder}"
            found[folder] = body(script.read_text(), header).replace(str(root), "<study>")
    return found


def folders(root: Path, steps: list[str]) -> set[str]:
    """Step folders and the instance folders in them."""
    found = {step for step in steps if (root / step).is_dir()}
    return found | {f"{step}/{child.name}" for step in found for child in (root / step).iterdir() if child.is_dir()}


def body(text: str, header: bool) -> str:
    """Drop the shebang and, in Maestro's scripts, the header block that ends at the first blank line."""
    lines = text.splitlines()[1:]
    if header:
        lines = lines[lines.index("") + 1:] if "" in lines else []
    return "\n".join(lines).strip()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_legato_matches_maestro(case: Case, tmp_path: Path, origin: Path) -> None:
    maestro.require()
    cwd = workdir(tmp_path, origin)
    theirs = run_maestro(case, cwd)
    ours = legato("run", "--dry", "--layout", "flat", "--write-scripts", "-o", "legato_out", case.spec,
                  *pgen_args(case), cwd=cwd)
    accepted = theirs.returncode == 0
    assert accepted == (case.spec not in REJECTED), f"maestro: {theirs.stderr[-1500:]}"
    checked = legato("validate", case.spec, *pgen_args(case), cwd=cwd)
    assert checked.returncode == (0 if accepted else 1), checked.stderr
    assert (ours.returncode == 0) == accepted, (
        f"maestro {'accepted' if accepted else 'rejected'} the spec, legato did not:\n"
        f"maestro: {theirs.stderr[-1500:]}\nlegato: {ours.stderr}"
    )
    if not accepted:
        assert ours.stderr.startswith("legato: error: ") and "Traceback" not in ours.stderr, ours.stderr
        assert not (cwd / "legato_out").exists(), "a rejected spec left its study folder"
        return
    steps = step_names(cwd / case.spec)
    assert folders(cwd / "legato_out", steps) == folders(cwd / "maestro_out", steps)
    expected, actual = scripts(cwd / "maestro_out", steps, True), scripts(cwd / "legato_out", steps, False)
    assert sorted(actual) == sorted(expected)
    for folder, text in expected.items():
        assert actual[folder] == text, f"{folder}: script bodies differ"


DIFFERENCES = {
    "nodes-only": ("srun -n  -N 2 hostname", "srun -N 2 hostname"),
    "no-counts": ("$(LAUNCHER) hostname", "srun hostname"),
    "bare-beside-bracketed": ("srun -n 1 x; $(LAUNCHER) y", "srun -n 1 x; srun -n 2 y"),
}
"""Step -> (Maestro's script body, legato's): the deliberate differences the README lists."""


def test_deliberate_launcher_differences(tmp_path: Path, origin: Path) -> None:
    maestro.require()
    cwd = workdir(tmp_path, origin)
    case = Case("legato/launcher_differences.yaml")
    assert run_maestro(case, cwd).returncode == 0
    done = legato("run", "--dry", "--layout", "flat", "--write-scripts", "-o", "legato_out", case.spec, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert scripts(cwd / "maestro_out", list(DIFFERENCES), True) == {step: b[0] for step, b in DIFFERENCES.items()}
    assert scripts(cwd / "legato_out", list(DIFFERENCES), False) == {step: b[1] for step, b in DIFFERENCES.items()}


LAUNCHER_PROBE = """
import json, sys
from maestrowf.interfaces.script.lsfscriptadapter import LSFScriptAdapter
from maestrowf.interfaces.script.slurmscriptadapter import SlurmScriptAdapter
adapters = {"slurm": SlurmScriptAdapter(host="h", bank="b", queue="q"), "lsf": LSFScriptAdapter(host="h", bank="b", queue="q")}
out = []
for key, cmd, run in json.load(sys.stdin):
    try:
        out.append(adapters[key]._substitute_parallel_command(cmd, **{"nodes": "", "procs": "", **run}))
    except ValueError:
        out.append(None)
    except Exception as exc:
        out.append({"crashed": type(exc).__name__})
print(json.dumps(out))
"""
SLURM_RUN = {"nodes": 2, "procs": 8, "cores per task": 2}
LSF_RUN = {"nodes": 2, "procs": 8, "tasks per rs": 2, "rs per node": 2, "cpus per rs": 4, "gpus": 1, "bind": "packed:4",
           "bind gpus": "none"}
LAUNCHES = [
    (key, cmd, run)
    for key, run in (("slurm", SLURM_RUN), ("slurm", {"procs": 3}), ("lsf", LSF_RUN), ("lsf", {"nodes": 1, "procs": 1}))
    for cmd in ("$(LAUNCHER) ./a", "$(LAUNCHER)[1p] ./a", "$(LAUNCHER)[1n, 2p] ./a", "$(LAUNCHER)[2p, 1n] ./a",
                "$(LAUNCHER)[1, 2] ./a", "$(LAUNCHER)[2p] a\n$(LAUNCHER)[1p] b", "$(LAUNCHER)[1p, 2p] ./a",
                "$(LAUNCHER)[2n] ./a", "$(LAUNCHER)[9p] ./a", "$(LAUNCHER)[4p] a\n$(LAUNCHER)[5p] b", "./a")
]
"""Every launcher form, on SLURM and LSF, with and without the optional run keys; None where maestro rejects it.
Two bracketed launchers go on two lines: on one line Maestro's greedy pattern reads them as one
malformed override and rejects the command, which legato does not (README: Maestro compatibility)."""


def test_launchers_match_maestros_adapters() -> None:
    """legato's ``expand_launchers`` against maestrowf's own ``_substitute_parallel_command``, form by form."""
    import json

    from legato.errors import LegatoError
    from legato.schedulers import ADAPTERS

    maestro.require()
    done = subprocess.run([str(maestro.PYTHON), "-c", LAUNCHER_PROBE], input=json.dumps(LAUNCHES), capture_output=True,
                          text=True, timeout=120, env=maestro.env(), check=True)
    crashed = []
    for (key, cmd, run), theirs in zip(LAUNCHES, json.loads(done.stdout.splitlines()[-1])):
        try:
            ours = ADAPTERS[key]({}).expand_launchers(cmd, run)
        except LegatoError:
            ours = None
        if isinstance(theirs, dict):  # Maestro crashed (a TypeError comparing a count with ""): no decision to match
            crashed.append((key, cmd, run))
            continue
        if theirs is not None:  # Maestro keeps the blank of a legacy "[1, 2]" ("srun -n  2"): same command
            theirs = "\n".join(" ".join(line.split()) for line in theirs.split("\n"))
        assert ours == theirs, (key, cmd, run)
    assert len(crashed) <= len(LAUNCHES) // 4, crashed
