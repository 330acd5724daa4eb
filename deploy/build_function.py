"""Build the function's deployment directory: the code, its dependencies as wheels for
the function's Python and architecture, bytecode when it can be valid, a build record.

    python deploy/build_function.py --out DIR [--runtime python3.11] [--architecture arm64]

`sam build` runs this through `make build-ThreadlineFunction` (the template's
`BuildMethod: makefile`, mk/deploy.mk) with `--out $ARTIFACTS_DIR`. It works on any
machine with a Python and pip, whatever that Python's version or the machine's
architecture, because nothing is compiled here: pip is asked for binary wheels only
(`--only-binary=:all:`) for the target's platform, implementation, Python version
and ABI, so `pydantic_core`, `jiter` and the rest arrive built for Amazon Linux on
arm64 (or x86_64).

Bytecode: `/var/task` is read-only in Lambda, so modules shipped without `.pyc`
files are compiled again at every cold start. `.pyc` files are only valid for the
minor version that wrote them, so they are written by a CPython of the function's
version: the one running this script when it is the function's (as in `sam build
--use-container`, whose image's Python is the function's), otherwise one found on
this machine (`--python`/`TARGET_PYTHON`, then `python3.X` on `PATH`, then pyenv's
versions). Each `.pyc` written is then checked against that version's magic number
(`importlib.util.MAGIC_NUMBER`: 3495 for 3.11, 3531 for 3.12, 3571 for 3.13). When no
such interpreter exists here the build stops, saying so and what to do (exit status
3; `make build` then builds in SAM's container instead, and says so): a package
without bytecode is never shipped silently. They are written in `unchecked-hash`
mode: Python then trusts them without comparing the sources' modification times,
which the zip round trip does not keep exactly (a timestamp-checked `.pyc` whose
source looks newer would be ignored, and the module compiled again, at every cold
start). Their recorded paths are `/var/task/...`, as in the function.

The build record, `threadline-build.json` at the top of the package, names the
Python and architecture it was built for; the runtime refuses to start on another
(`Runtime.PythonVersionMismatch`) instead of failing later on a compiled module.

Prints a summary: size, file counts, compiled extensions and their platform, bytecode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"
PACKAGES = ("core", "handler")
REQUIREMENTS = ROOT / "requirements.txt"
WRAPPER = Path("handler") / "streaming" / "exec-wrapper"
BUILD_INFO = "threadline-build.json"
TASK_ROOT = "/var/task"
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
"""Lambda's limit for a function's unzipped code (layers included)."""

# python3.10 and 3.11 run on Amazon Linux 2 (glibc 2.26), python3.12 and later on
# Amazon Linux 2023 (glibc 2.34): wheels for any manylinux from glibc 2.17 up to that.
# pip widens manylinux2014 to 2010 and 1 by itself, but not manylinux_2_34 to older
# glibc versions, so those are listed.
GLIBC = {"3.10": 26, "3.11": 26, "3.12": 34, "3.13": 34, "3.14": 34}
OLDEST_GLIBC = 17
MACHINE = {"arm64": "aarch64", "x86_64": "x86_64"}


def platforms(python: str, architecture: str) -> list[str]:
    """The wheel platform tags the function's OS runs, newest first."""
    machine = MACHINE[architecture]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC[python], OLDEST_GLIBC - 1, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def describe_platforms(tags: list[str]) -> str:
    return tags[0] if len(tags) <= 2 else f"{tags[0]} (down to {tags[-2]}, {tags[-1]})"


def _say(message: str) -> None:
    print(f"build: {message}", flush=True)


def install_dependencies(out: Path, python: str, architecture: str, requirements: Path) -> None:
    nodot = python.replace(".", "")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--abi",
        f"cp{nodot}",
        *(arg for tag in platforms(python, architecture) for arg in ("--platform", tag)),
        "--target",
        str(out),
        "--upgrade",
        "-r",
        str(requirements),
    ]
    _say(f"pip: wheels for cp{nodot} on {describe_platforms(platforms(python, architecture))} from {requirements.name}")
    subprocess.run(command, check=True)  # noqa: S603
    # Console scripts are of no use in a function; pip's --target leaves them here.
    shutil.rmtree(out / "bin", ignore_errors=True)


def copy_sources(out: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache", ".pytest_cache")
    for package in PACKAGES:
        target = out / package
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(SOURCE / package, target, ignore=ignore)
    wrapper = out / WRAPPER
    wrapper.chmod(0o755)  # Lambda runs it as the exec wrapper


NO_INTERPRETER = 3
"""Exit status when no CPython of the function's version is found (mk/deploy.mk reads it)."""

_PROBE = (
    "import importlib.util, sys; "
    "print(sys.implementation.name, '%d.%d' % sys.version_info[:2], sys.version.split()[0], "
    "importlib.util.MAGIC_NUMBER.hex(), sys.implementation.cache_tag)"
)
_COMPILE = (
    "import compileall, py_compile, sys; "
    "ok = compileall.compile_dir(sys.argv[1], quiet=1, stripdir=sys.argv[1], prependdir=sys.argv[2], "
    "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, workers=0); "
    "sys.exit(0 if ok else 1)"
)


class NoInterpreter(SystemExit):
    """No CPython of the function's version on this machine: bytecode cannot be written."""


@dataclass(frozen=True)
class Interpreter:
    """A CPython that can write bytecode for the function: its path, version and magic number."""

    path: str
    version: str
    """major.minor"""
    full_version: str
    magic: bytes
    cache_tag: str
    """`cpython-313`: the middle of its `.pyc` names."""


def _clean_env() -> dict[str, str]:
    """The environment for another interpreter: none of this one's paths or virtualenv."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "__PYVENV"))}


def probe(path: str) -> Interpreter | None:
    """What `path` is, if it runs and is a CPython; None otherwise (a pyenv shim of a
    version not selected fails here, for instance)."""
    try:
        result = subprocess.run(  # noqa: S603
            [path, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30, env=_clean_env(), check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = result.stdout.split()
    if result.returncode != 0 or len(fields) != 5 or fields[0] != "cpython":
        return None
    return Interpreter(path, fields[1], fields[2], bytes.fromhex(fields[3]), fields[4])


def _pyenv_roots() -> list[Path]:
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        result = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode == 0 and result.stdout.strip():
            roots.append(Path(result.stdout.strip()))
    return roots


def candidates(python: str, explicit: str | None = None) -> list[str]:
    """Where a CPython `python` (major.minor) may be, most deliberate first."""
    found: list[str] = []
    if explicit:
        found.append(explicit)
    if f"{sys.version_info.major}.{sys.version_info.minor}" == python:
        found.append(sys.executable)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder or ".") / f"python{python}"
        if path.is_file() and os.access(path, os.X_OK):
            found.append(str(path))
    for root in _pyenv_roots():
        versions = sorted(
            (root / "versions").glob(f"{python}.*"),
            key=lambda p: [int(n) if n.isascii() and n.isdigit() else -1 for n in p.name.split(".")],
            reverse=True,
        )
        found += [str(v / "bin" / f"python{python}") for v in versions if (v / "bin" / f"python{python}").is_file()]
    return list(dict.fromkeys(found))


def find_interpreter(python: str, explicit: str | None = None) -> Interpreter:
    """A CPython of the function's version `python` (major.minor), or NoInterpreter."""
    tried = candidates(python, explicit)
    for path in tried:
        interpreter = probe(path)
        if interpreter is not None and interpreter.version == python:
            return interpreter
        if path == explicit:
            raise NoInterpreter(f"build: {explicit} is not a CPython {python} (TARGET_PYTHON / --python)")
    raise NoInterpreter(
        f"build: no CPython {python} on this machine (tried: {', '.join(tried) or 'PATH and pyenv: nothing'}). "
        f"Bytecode for a python{python} function can only be written by Python {python}, and a package "
        f"without it compiles every module at every cold start. Either install Python {python} "
        f"(e.g. pyenv install {python}) or name it (TARGET_PYTHON=/path/to/python{python}), or build in "
        f"SAM's python{python} image (sam build --use-container; `make build` does that by itself "
        f"when Docker is there)."
    )


def compile_bytecode(out: Path, interpreter: Interpreter) -> int:
    """Compile every module with the function's Python; the count of `.pyc` files."""
    result = subprocess.run(  # noqa: S603
        [interpreter.path, "-I", "-c", _COMPILE, str(out), TASK_ROOT], env=_clean_env(), check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"build: some modules failed to compile with {interpreter.path}")
    problems = check_bytecode(out, interpreter.magic, interpreter.cache_tag)
    if problems:
        raise SystemExit(f"build: bytecode not for Python {interpreter.version}: {', '.join(problems[:5])}")
    return sum(1 for _ in out.rglob("*.pyc"))


def magic_number(magic: bytes) -> int:
    """The number CPython's docs and `Lib/importlib/_bootstrap_external.py` quote (3571 for 3.13)."""
    return int.from_bytes(magic[:2], "little")


def check_bytecode(out: Path, magic: bytes, cache_tag: str) -> list[str]:
    """Each `.pyc` that the function's Python would ignore: another magic number or another
    name tag (a `cpython-311` file is never read by 3.13). Empty when all are valid."""
    problems = []
    for path in sorted(out.rglob("*.pyc")):
        with path.open("rb") as handle:
            head = handle.read(4)
        if head != magic:
            problems.append(f"{path.relative_to(out)} (magic {magic_number(head)}, not {magic_number(magic)})")
        elif f".{cache_tag}." not in path.name:
            problems.append(f"{path.relative_to(out)} (not a {cache_tag} name)")
    return problems


def extensions(out: Path) -> list[Path]:
    return sorted(path for path in out.rglob("*.so*") if path.is_file())


def check_platform(out: Path, python: str, architecture: str) -> list[str]:
    """Each compiled extension must be for the target: `*.cpython-311-aarch64-linux-gnu.so`."""
    nodot = python.replace(".", "")
    machine = MACHINE[architecture]
    problems = []
    for path in extensions(out):
        name = path.name
        if ".cpython-" in name and f".cpython-{nodot}-{machine}-linux-gnu.so" not in name:
            problems.append(str(path.relative_to(out)))
        elif ".abi3." in name or ".cpython-" not in name:
            # Limited-API or plain shared libraries: check the ELF machine instead.
            with path.open("rb") as handle:
                header = handle.read(20)
            if header[:4] == b"\x7fELF":
                elf_machine = int.from_bytes(header[18:20], "little")
                if elf_machine != {"aarch64": 183, "x86_64": 62}[machine]:
                    problems.append(str(path.relative_to(out)))
    return problems


def size_of(out: Path) -> int:
    return sum(path.stat().st_size for path in out.rglob("*") if path.is_file())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build(
    out: Path, runtime: str, architecture: str, requirements: Path = REQUIREMENTS, python_path: str | None = None
) -> dict[str, object]:
    if not runtime.startswith("python") or runtime.removeprefix("python") not in GLIBC:
        raise SystemExit(f"build: unsupported runtime {runtime!r} (one of python{', python'.join(GLIBC)})")
    if architecture not in MACHINE:
        raise SystemExit(f"build: unsupported architecture {architecture!r} (arm64 or x86_64)")
    python = runtime.removeprefix("python")
    started = time.monotonic()
    interpreter = find_interpreter(python, python_path)  # before anything is downloaded
    _say(f"bytecode by {interpreter.path} (Python {interpreter.full_version}, magic {magic_number(interpreter.magic)})")
    if ROOT.is_relative_to(out) or (out / ".git").exists() or out == Path.home():
        raise SystemExit(f"build: refusing to empty {out}: give a directory of its own")
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():  # a clean directory: nothing left from another build
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()

    install_dependencies(out, python, architecture, requirements)
    copy_sources(out)
    problems = check_platform(out, python, architecture)
    if problems:
        raise SystemExit(f"build: extensions for another platform: {', '.join(problems)}")

    compiled = compile_bytecode(out, interpreter)
    _say(
        f"bytecode: {compiled} .pyc files for Python {python}, magic number {magic_number(interpreter.magic)} "
        f"checked on each (unchecked-hash, paths under {TASK_ROOT})"
    )

    info: dict[str, object] = {
        "runtime": runtime,
        "python": python,
        "architecture": architecture,
        "platforms": platforms(python, architecture),
        "bytecode": compiled > 0,
        "built_with": sys.version.split()[0],
        "bytecode_by": interpreter.full_version,
        "magic_number": magic_number(interpreter.magic),
        "requirements_sha256": digest(requirements),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    if size_of(out) > MAX_UNZIPPED_BYTES:
        raise SystemExit(f"build: {size_of(out) / 1e6:.0f} MB unzipped, over Lambda's 250 MB")
    describe(out)
    _say(f"built in {time.monotonic() - started:.1f} s")
    return info


def describe(out: Path) -> None:
    """What a built package holds: its build record, size, extensions and bytecode."""
    record = out / BUILD_INFO
    if not record.is_file():
        raise SystemExit(f"build: {out} has no {BUILD_INFO}: not a package this script built")
    info = json.loads(record.read_text(encoding="utf-8"))
    files = [path for path in out.rglob("*") if path.is_file()]
    exts = extensions(out)
    pyc = sum(1 for path in files if path.suffix == ".pyc")
    wrapper = out / WRAPPER
    _say(
        f"{out}: {len(files)} files, {size_of(out) / 1e6:.1f} MB unzipped, for {info['runtime']} on "
        f"{info['architecture']} ({describe_platforms(list(info['platforms']))})"
    )
    _say(
        f"  handler: {'ok' if (out / 'handler' / 'app.py').is_file() else 'MISSING'} handler/app.py; "
        f"exec wrapper {WRAPPER} {'executable' if os.access(wrapper, os.X_OK) else 'NOT EXECUTABLE'}"
    )
    _say(f"  compiled extensions: {', '.join(sorted(p.name for p in exts)) or 'none'}")
    _say(f"  bytecode: {pyc} .pyc files" + ("" if pyc else " (none: every cold start compiles the modules)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="the package directory to build (sam's ARTIFACTS_DIR)")
    parser.add_argument("--describe", type=Path, help="only describe an existing package")
    parser.add_argument("--runtime", default=os.environ.get("LAMBDA_RUNTIME", "python3.11"))
    parser.add_argument("--architecture", default=os.environ.get("LAMBDA_ARCHITECTURE", "arm64"))
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    parser.add_argument(
        "--python", default=os.environ.get("TARGET_PYTHON") or None, help="the function's Python, to write bytecode"
    )
    parser.add_argument(
        "--find-python", metavar="RUNTIME", help="only say which interpreter would write bytecode for RUNTIME"
    )
    args = parser.parse_args(argv)
    if args.find_python is not None:
        try:
            found = find_interpreter(args.find_python.removeprefix("python"), args.python)
        except NoInterpreter as missing:
            print(missing.code, file=sys.stderr)
            return NO_INTERPRETER
        print(found.path)
        return 0
    if args.describe is not None:
        describe(args.describe.resolve())
        return 0
    if args.out is None:
        parser.error("--out or --describe is needed")
    try:
        build(args.out.resolve(), args.runtime, args.architecture, args.requirements, args.python)
    except NoInterpreter as missing:
        print(missing.code, file=sys.stderr)
        return NO_INTERPRETER
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
