"""The function's package: what `sam build` runs (`make build-ThreadlineFunction
ARTIFACTS_DIR=...`) produces the handler, its dependencies built for arm64 and the
function's Python, bytecode that stays valid after SAM's zip, and a build record; a
package built the same way for this machine's architecture serves requests from a
bare interpreter after the same zip round trip.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.events import chat_body, rest_event
from tests.e2e.fake_runtime_api import FakeRuntimeAPI

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DEPENDENCIES = [
    "fastapi",
    "pydantic",
    "pydantic_core",
    "starlette",
    "mangum",
    "boto3",
    "botocore",
    "aws_lambda_powertools",
    "openai",
    "anyio",
    "h11",  # the streaming runtime's HTTP/1.1
]
ELF_MACHINES = {183: "aarch64", 62: "x86_64"}
ZIP_EPOCH = time.mktime((1980, 1, 1, 0, 0, 0, 0, 0, -1))


def elf_machine(path: Path) -> str:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), "unknown")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifacts") / "ThreadlineFunction"
    subprocess.run(
        ["make", "--no-print-directory", "build-ThreadlineFunction", f"ARTIFACTS_DIR={out}"],
        cwd=ROOT,
        check=True,
        timeout=900,
        env={**os.environ, "LAMBDA_RUNTIME": "python3.11"},
    )
    return out


def test_the_package_holds_the_handler_the_runtime_and_the_page(package: Path) -> None:
    for path in ("handler/app.py", "handler/lambda_buffered.py", "handler/streaming/runtime.py", "core/chat.py"):
        assert (package / path).is_file(), path
    wrapper = package / "handler" / "streaming" / "exec-wrapper"
    assert wrapper.stat().st_mode & 0o777 == 0o755
    assert (package / "handler" / "static" / "index.html").is_file()
    # Only the function: no tests, dev tools, caches or console scripts.
    for absent in ("tests", "devtools", "bin", "deploy", ".venv", "node_modules"):
        assert not (package / absent).exists(), absent
    assert not list(package.rglob("*.cpython-311.opt-*.pyc"))


def test_the_dependencies_are_built_for_arm64_and_python_311(package: Path) -> None:
    for name in RUNTIME_DEPENDENCIES:
        assert (package / name / "__init__.py").is_file(), name
    extensions = list(package.rglob("*.so"))
    assert extensions, "pydantic_core at least is compiled"
    for path in extensions:
        assert elf_machine(path) == "aarch64", path
        if ".cpython-" in path.name:
            assert path.name.endswith(".cpython-311-aarch64-linux-gnu.so"), path
    assert (package / "pydantic_core" / "_pydantic_core.cpython-311-aarch64-linux-gnu.so").is_file()
    wheel_tags = [
        line.split(":", 1)[1].strip()
        for wheel in package.glob("*.dist-info/WHEEL")
        for line in wheel.read_text().splitlines()
        if line.startswith("Tag:")
    ]
    for tag in wheel_tags:
        python, abi, platform = tag.split("-")
        assert platform == "any" or "aarch64" in platform, tag
        assert platform == "any" or (python, abi) in {("cp311", "cp311"), ("cp311", "abi3")}, tag
    record = json.loads((package / "threadline-build.json").read_text())
    assert record["runtime"] == "python3.11" and record["architecture"] == "arm64"
    assert record["bytecode"] is True


def test_bytecode_stays_valid_after_sams_zip(package: Path) -> None:
    """SAM zips every file with the date 1980-01-01; timestamp-checked .pyc files would
    then look stale and be ignored. Ours are unchecked-hash .pyc, named for /var/task."""
    for module in ("handler/app.py", "handler/streaming/runtime.py", "fastapi/applications.py"):
        source = package / module
        cache = source.parent / "__pycache__" / f"{source.stem}.cpython-311.pyc"
        data = cache.read_bytes()
        assert data[:4] == importlib.util.MAGIC_NUMBER
        flags = int.from_bytes(data[4:8], "little")
        assert flags == 0b01, f"{cache}: not an unchecked hash-based .pyc (flags {flags})"
        code = marshal.loads(data[16:])
        assert code.co_filename == f"/var/task/{module}"


MAGIC_NUMBERS = {"python3.11": 3495, "python3.12": 3531, "python3.13": 3571}
"""CPython's own numbers (Lib/importlib/_bootstrap_external.py): a .pyc with another is ignored."""


def _magic(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:2], "little")


@pytest.fixture(scope="module", params=["python3.12", "python3.13"])
def newer_package(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """`make build-ThreadlineFunction` for a newer Python, run from this 3.11 virtualenv."""
    runtime: str = request.param
    probe = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "build_function.py"), "--find-python", runtime],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"no CPython for {runtime} on this machine: {probe.stderr.strip()[:200]}")
    out = tmp_path_factory.mktemp(runtime) / "ThreadlineFunction"
    subprocess.run(
        ["make", "--no-print-directory", "build-ThreadlineFunction", f"ARTIFACTS_DIR={out}"],
        cwd=ROOT,
        check=True,
        timeout=900,
        env={**os.environ, "LAMBDA_RUNTIME": runtime},
    )
    return runtime, out


def test_a_package_for_a_newer_python_ships_bytecode_of_that_python(newer_package: tuple[str, Path]) -> None:
    """python3.12 and python3.13 packages built here carry .pyc files that their Python
    reads: its magic number and name tag, for every module, written by that interpreter."""
    runtime, out = newer_package
    nodot = runtime.removeprefix("python").replace(".", "")
    pyc = list(out.rglob("*.pyc"))
    sources = [path for path in out.rglob("*.py") if "__pycache__" not in path.parts]
    assert len(pyc) >= len(sources) * 0.95, (len(pyc), len(sources))
    assert {_magic(path) for path in pyc} == {MAGIC_NUMBERS[runtime]}
    assert all(f".cpython-{nodot}.pyc" in path.name for path in pyc)
    for module in ("handler/app.py", "handler/streaming/runtime.py", "fastapi/applications.py"):
        source = out / module
        cache = source.parent / "__pycache__" / f"{source.stem}.cpython-{nodot}.pyc"
        data = cache.read_bytes()
        assert _magic(cache) == MAGIC_NUMBERS[runtime], cache
        assert int.from_bytes(data[4:8], "little") == 0b01, f"{cache}: not unchecked-hash"
    assert (out / "pydantic_core" / f"_pydantic_core.cpython-{nodot}-aarch64-linux-gnu.so").is_file()
    for path in out.rglob("*.so"):
        assert elf_machine(path) == "aarch64", path
    record = json.loads((out / "threadline-build.json").read_text())
    assert record["python"] == runtime.removeprefix("python")
    assert record["bytecode"] is True and record["magic_number"] == MAGIC_NUMBERS[runtime]
    assert record["bytecode_by"].startswith(runtime.removeprefix("python") + ".")


def test_without_the_functions_python_the_build_refuses_and_says_what_to_do(tmp_path: Path) -> None:
    """No silent package without bytecode: no python3.12 on PATH or under pyenv -> exit 3,
    before anything is downloaded, naming the ways out."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYENV", "TARGET_PYTHON"))}
    env.update({"PATH": str(empty), "PYENV_ROOT": str(empty)})
    out = tmp_path / "py312"
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "build_function.py"), "--out", str(out), "--runtime", "python3.12"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no CPython 3.12 on this machine" in result.stderr
    assert "sam build --use-container" in result.stderr and "TARGET_PYTHON" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_bytecode_of_another_python_is_caught(tmp_path: Path) -> None:
    """The check the build runs on every .pyc: one written by 3.11 is named, for a 3.13 target."""
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import build_function
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    module = tmp_path / "mod.py"
    module.write_text("x = 1\n")
    import py_compile

    py_compile.compile(str(module), cfile=str(tmp_path / "__pycache__" / "mod.cpython-313.pyc"))
    magic_313 = (3571).to_bytes(2, "little") + b"\r\n"
    written = int.from_bytes(importlib.util.MAGIC_NUMBER[:2], "little")
    assert written != 3571, "this test needs a Python other than 3.13 to write the wrong bytecode"
    problems = build_function.check_bytecode(tmp_path, magic_313, "cpython-313")
    assert problems == [f"__pycache__/mod.cpython-313.pyc (magic {written}, not 3571)"]
    assert build_function.check_bytecode(tmp_path, importlib.util.MAGIC_NUMBER, "cpython-313") == []


def _zip_like_sam(source: Path, target: Path) -> None:
    """What `sam deploy` uploads (samcli make_zip: each file's mode, the default 1980 date)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(str(path.relative_to(source)))
                info.create_system = 3
                info.external_attr = path.stat().st_mode << 16
                archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)


def _unzip_like_lambda(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            path = target / info.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zipped.read(info))
            path.chmod((info.external_attr >> 16) & 0o777 or 0o644)
            os.utime(path, (ZIP_EPOCH, ZIP_EPOCH))


def bare_python(where: Path) -> str:
    """This Python without any site-packages (`-S`), the project's virtualenv or not: the
    package must bring everything. A shim named like an interpreter, since the exec
    wrapper takes the interpreter's path as Lambda gives it (and `-I` would drop the
    PYTHONPATH the wrapper sets)."""
    base = Path(sys.base_exec_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert base.is_file(), base
    where.mkdir(parents=True, exist_ok=True)
    shim = where / base.name
    shim.write_text(f'#!/bin/sh\nexec "{base}" -S "$@"\n')
    shim.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    probe = subprocess.run([str(shim), "-c", "import fastapi"], capture_output=True, check=False, env=env)
    assert probe.returncode != 0, f"{shim} imports fastapi without the package: it cannot show the package is whole"
    return str(shim)


def test_a_package_for_this_machine_serves_after_the_zip_round_trip(
    tmp_path: Path, local_table: tuple[Any, str]
) -> None:
    machine = os.uname().machine
    architecture = {"x86_64": "x86_64", "aarch64": "arm64"}.get(machine)
    if architecture is None:
        pytest.skip(f"no Lambda architecture for {machine}")
    built = tmp_path / "built"
    subprocess.run(
        [
            *(sys.executable, str(ROOT / "deploy" / "build_function.py"), "--out", str(built)),
            *("--runtime", "python3.11", "--architecture", architecture),
        ],
        check=True,
        timeout=900,
    )
    _zip_like_sam(built, tmp_path / "function.zip")
    task_root = tmp_path / "var-task"
    _unzip_like_lambda(tmp_path / "function.zip", task_root)

    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV", "LAMBDA_"))}
    key = "artifact-test-key"
    with FakeRuntimeAPI() as api:
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "LAMBDA_TASK_ROOT": str(task_root),
                "AWS_LAMBDA_FUNCTION_NAME": "threadline-artifact",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
                "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only
                "MODEL_PROVIDER": "echo",
                "API_KEYS": key,
            }
        )
        wrapper = task_root / "handler" / "streaming" / "exec-wrapper"
        log = (tmp_path / "runtime.log").open("wb")
        process = subprocess.Popen(
            [str(wrapper), bare_python(tmp_path / "interpreter"), "/var/runtime/bootstrap.py"],
            env=env,
            cwd="/",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            health = api.wait(api.queue(rest_event("GET", "/health")), timeout=60)
            assert health.response is not None, (tmp_path / "runtime.log").read_text()
            assert json.loads(health.response.split()[1]) == {"status": "ok"}
            event = rest_event(
                "POST",
                "/v1/chat/completions",
                chat_body("from the package"),
                headers={"Authorization": f"Bearer {key}"},
            )
            chat = api.wait(api.queue(event), timeout=60)
            assert chat.response is not None, (tmp_path / "runtime.log").read_text()
            prelude, payload = chat.response.split()
            assert prelude["statusCode"] == 200, payload
            assert payload.endswith(b"data: [DONE]\n\n")
        finally:
            api.close()
            process.wait(timeout=30)
            log.close()
