"""Every developer task of the monorepo is a nox session.

    nox -s tests -- [dist ...]     each distribution in its own fresh venv (default: all)
    nox -s slow -- [dist ...]      the tests marked slow, same isolation
    nox -s integration             every distribution in one venv; runs integration_tests/
    nox -s lint                    ruff check + ruff format --check
    nox -s bench -- <dist> [--quick]   a package's claims -> results/<dist>.json (+ README table)
    nox -s demo -- [dist]          python -m <import_name> demo, for one or all packages
    nox -s reproduce               every package's quick claims -> docs/results.md
    nox -s build                   wheels + sdists into dist/, metadata checked, each wheel
                                   installed alone (with the shared wheel) in a clean venv

Packages are discovered from packages/*/pyproject.toml: adding a folder adds it to every session.
Venvs are made with uv when it is available (fast), else with the standard library's venv + pip.
uv does not read pip's configuration, so a local find-links directory given to pip through
PIP_FIND_LINKS (e.g. a CPU build of torch) is passed on to uv at run time.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nox

ROOT = Path(__file__).parent.resolve()
CONSTRAINTS = ROOT / "constraints.txt"
VENVS = ROOT / ".nox" / "envs"
PYTHON = os.environ.get("MONOREPO_PYTHON", sys.executable)

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "integration", "lint"]
nox.options.reuse_existing_virtualenvs = False

if os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Dist:
    name: str  # distribution name (pip)
    import_name: str
    path: Path
    extras: tuple[str, ...]

    @property
    def is_package(self) -> bool:
        return self.path.parent.name == "packages"

    def spec(self, *extras: str) -> str:
        wanted = [e for e in extras if e in self.extras]
        return f"{self.path}[{','.join(wanted)}]" if wanted else str(self.path)


def _read_dist(path: Path) -> Dist:
    meta = tomllib.loads((path / "pyproject.toml").read_text())
    project = meta.get("project", {})
    name = project.get("name")
    if not name:
        raise SystemExit(f"{path}/pyproject.toml has no [project].name")
    import_name = meta.get("tool", {}).get("monorepo", {}).get("import-name")
    import_name = import_name or name.replace("-", "_")
    extras = tuple(project.get("optional-dependencies", {}))
    return Dist(name, import_name, path, extras)


def discover() -> dict[str, Dist]:
    """shared first, then every packages/<x>/ holding a pyproject.toml, src/ and tests/."""
    found = {"shared": _read_dist(ROOT / "shared")}
    for p in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        d = _read_dist(p.parent)
        if (d.path / "src").is_dir():
            found[d.name] = d
    return found


def select(session: nox.Session, names: list[str], *, packages_only: bool = False) -> list[Dist]:
    dists = discover()
    if packages_only:
        dists = {k: v for k, v in dists.items() if v.is_package}
    if not names:
        return list(dists.values())
    unknown = [n for n in names if n not in dists]
    if unknown:
        session.error(f"unknown distribution(s) {unknown}; known: {sorted(dists)}")
    return [dists[n] for n in names]


# --------------------------------------------------------------------------- venvs


def _uv() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return None


class Env:
    """A fresh virtual environment under .nox/envs/<name> (uv if present, else venv + pip)."""

    def __init__(self, session: nox.Session, name: str) -> None:
        self.session = session
        self.path = VENVS / name
        self.uv = _uv()
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.uv:
            session.run(self.uv, "venv", "-q", "--python", PYTHON, str(self.path), external=True)
        else:
            session.run(PYTHON, "-m", "venv", str(self.path), external=True)
            session.run(
                self.python, "-m", "pip", "install", "-q", "--upgrade", "pip", external=True
            )

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def install(self, *args: str) -> None:
        if self.uv:
            cmd = [self.uv, "pip", "install", "-q", "--python", self.python]
        else:
            cmd = [self.python, "-m", "pip", "install", "-q"]
        self.session.run(
            *cmd, "-c", str(CONSTRAINTS), *args, external=True, env={"DS_BUILD_OPS": "0"}
        )

    def run(self, *args: str, **kwargs) -> None:
        """Run a command inside the venv; ``python`` means this venv's interpreter."""
        if args and args[0] == "python":
            # -P: never put the cwd (the repo root, holding shared/) on sys.path
            args = (self.python, "-P", *args[1:])
        env = {"VIRTUAL_ENV": str(self.path), "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
        env.update(kwargs.pop("env", {}))
        self.session.run(*args, external=True, env=env, **kwargs)


def _dist_env(session: nox.Session, dist: Dist, prefix: str, *extras: str) -> Env:
    env = Env(session, f"{prefix}-{dist.name}")
    specs = [str(ROOT / "shared")]
    if dist.name != "shared":
        specs.append(dist.spec(*extras))
    elif extras:
        specs = [dist.spec(*extras)]
    env.install(*specs)
    return env


def _pytest(env: Env, target: Path, *args: str, success_codes: list[int] | None = None) -> None:
    """pytest on ``target`` with the root configuration; exit code 5 ("no tests collected") fails
    unless ``success_codes`` allows it (a package without tests is a defect)."""
    env.run(
        "python",
        "-m",
        "pytest",
        str(target),
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),
        *args,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        success_codes=success_codes or [0],
    )


# --------------------------------------------------------------------------- sessions


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Each named distribution (default all) in its own fresh venv with only it, shared, [test]."""
    failed = []
    for dist in select(session, list(session.posargs)):
        session.log(f"=== {dist.name}: fresh venv with {dist.name}, shared and its test extra")
        try:
            env = _dist_env(session, dist, "tests", "test")
            _pytest(env, dist.path / "tests", "-m", "not slow")
        except nox.command.CommandFailed:
            failed.append(dist.name)
    if failed:
        session.error(f"tests failed for: {', '.join(failed)}")


@nox.session(venv_backend="none")
def slow(session: nox.Session) -> None:
    """The tests marked slow, each distribution in its own fresh venv."""
    for dist in select(session, list(session.posargs)):
        env = _dist_env(session, dist, "slow", "test")
        _pytest(env, dist.path / "tests", "-m", "slow", success_codes=[0, 5])


@nox.session(venv_backend="none")
def integration(session: nox.Session) -> None:
    """All distributions in one venv; runs integration_tests/."""
    env = Env(session, "integration")
    env.install(*(d.spec("test") for d in discover().values()))
    _pytest(env, ROOT / "integration_tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", str(ROOT))
    session.run("ruff", "format", "--check", str(ROOT))


def _bench(session: nox.Session, env: Env, dist: Dist, quick: bool) -> Path:
    out = ROOT / "results" / f"{dist.name}.json"
    args = ["python", "-m", dist.import_name, "bench", "--output", str(out)]
    if quick:
        args.append("--quick")
    env.run(*args)
    readme = dist.path / "README.md"
    if readme.exists():
        env.run("python", "-m", "shared", "readme", str(out), str(readme))
    return out


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """`nox -s bench -- <dist> [--quick]`: the package's claims -> results/<dist>.json."""
    args = list(session.posargs)
    quick = "--quick" in args
    names = [a for a in args if a != "--quick"]
    if len(names) != 1:
        session.error("usage: nox -s bench -- <dist> [--quick]")
    (dist,) = select(session, names, packages_only=True)
    env = _dist_env(session, dist, "bench", "bench", "plots")
    out = _bench(session, env, dist, quick)
    session.log(f"wrote {out.relative_to(ROOT)}")


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """`nox -s demo -- [dist]`: python -m <import_name> demo for one or all packages."""
    for dist in select(session, list(session.posargs), packages_only=True):
        env = _dist_env(session, dist, "demo", "demo", "plots")
        env.run("python", "-m", dist.import_name, "demo", env={"PROGRESS": "1"})


@nox.session(venv_backend="none")
def reproduce(session: nox.Session) -> None:
    """Every package's quick claims, then docs/results.md (package, claim, paper, ours, ...)."""
    dists = select(session, list(session.posargs), packages_only=True)
    if not dists:
        session.error("no packages under packages/ yet")
    outs = []
    for dist in dists:
        env = _dist_env(session, dist, "reproduce", "bench", "plots")
        outs.append(_bench(session, env, dist, quick=True))
    report_env = Env(session, "report")
    report_env.install(str(ROOT / "shared"))
    report_env.run(
        "python",
        "-m",
        "shared",
        "report",
        str(ROOT / "docs" / "results.md"),
        *map(str, outs),
        "--readme",
        str(ROOT / "README.md"),
    )


@nox.session(venv_backend="none")
def build(session: nox.Session) -> None:
    """Wheel + sdist of every distribution (or those named) into dist/, twine check, each wheel
    installed alone with the shared wheel in a clean venv."""
    out = ROOT / "dist"
    if out.exists():
        shutil.rmtree(out)
    tools = Env(session, "build-tools")
    tools.install("build>=1.2", "twine>=5")
    # `nox -s build -- <dist> ...` builds those (shared is always built: every wheel needs it)
    dists = select(session, list(session.posargs))
    if dists[0].name != "shared":
        dists.insert(0, discover()["shared"])
    for d in dists:
        if tools.uv:
            tools.run(
                tools.uv, "build", "-q", "--sdist", "--wheel", "--out-dir", str(out), str(d.path)
            )
        else:
            tools.run(
                "python", "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(d.path)
            )
    artifacts = sorted(str(p) for p in out.iterdir() if p.name.endswith((".whl", ".tar.gz")))
    tools.run("python", "-m", "twine", "check", "--strict", *artifacts)

    def wheel_of(d: Dist) -> Path:
        stem = d.name.replace("-", "_")
        wheels = sorted(out.glob(f"{stem}-*.whl"))
        if len(wheels) != 1:
            session.error(f"expected one wheel for {d.name}, found {wheels}")
        return wheels[0]

    shared_wheel = wheel_of(dists[0])
    for d in dists:
        env = Env(session, f"wheel-{d.name}")
        wheels = {str(shared_wheel), str(wheel_of(d))}
        env.install(*sorted(wheels))
        # -I: isolated mode, so neither the cwd nor PYTHONPATH can supply the source tree
        env.run(
            "python",
            "-I",
            "-c",
            f"import {d.import_name} as m; "
            f"assert 'site-packages' in (m.__file__ or ''), m.__file__; "
            f"print('{d.name}: import ok from', m.__file__)",
        )
        session.log(f"{d.name}: wheel installs alone with shared")
