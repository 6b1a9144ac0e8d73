"""The command's import weight: `import mlci.cli` loads no data or model library (a no-op rerun depends on it)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_loads_no_heavy_library():
    code = ("import sys, mlci.cli\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'sklearn', 'lightgbm', 'mlflow', "
            "'numpy', 'pyarrow', 'pydantic', 'fastapi'})\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
