"""`recsys demo`: a second demo in the same checkout is refused before it writes anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recsys import demo
from recsys.errors import RecsysError


def test_a_second_demo_in_the_same_checkout_is_refused_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "AIRFLOW_HOME", tmp_path / ".airflow")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    # another process runs a demo in this checkout: it holds the lock until told to stop
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from recsys import demo; "
            f"demo.AIRFLOW_HOME = Path({str(tmp_path / '.airflow')!r}); "
            "lock = demo._one_demo_at_a_time(); lock.__enter__(); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RecsysError, match=r"another `recsys demo` is running in this checkout .*demo\.lock"):
            demo.run_demo(users=50, days=5)
        assert not (tmp_path / "data").exists()  # no sample, no inbox
    finally:
        holder.communicate("")
    # once the other demo is gone, the lock is free again
    with demo._one_demo_at_a_time():
        assert (tmp_path / ".airflow" / "demo.lock").exists()
