#!/usr/bin/env python3
"""Bootstrap for a fresh clone: needs only Python >= 3.11.

    python3 dev.py demo    # the whole pipeline on embedded defaults
    python3 dev.py test    # the whole test suite
    python3 dev.py -- ARGS # any `paheko-recyclic` command inside the project's venv

The first call creates `.venv/` and installs the project with its test extras; later calls
reinstall only when `pyproject.toml` changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit("paheko-recyclic needs Python >= 3.11")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("Creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing paheko-recyclic and its test tools into .venv ...", flush=True)
    subprocess.run(
        [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-e", f"{ROOT}[test,postgres]"],
        check=True,
    )
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    ensure_venv()
    command = argv[0] if argv else "demo"
    if command == "test":
        args = [str(BIN / "python"), "-m", "pytest", "-n", "2", "-q", *argv[1:]]
    elif command == "--":
        args = [str(BIN / "paheko-recyclic"), *argv[1:]]
    else:
        args = [str(BIN / "paheko-recyclic"), *argv]
    return subprocess.call(args, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
