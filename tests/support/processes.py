"""What the private test services (PostgreSQL, the broker) share: their temporary directories, their
lifecycle, and the tie that ends them with the test run."""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any


class PrivateService:
    """`close()` stops the service and removes its directory; a context manager starts and closes it.

    Subclasses provide `start()`, `stop()` and `root` (the private directory, or None once removed)."""

    root: Path | None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, *args: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the service and remove its temporary directory."""
        try:
            self.stop()
        finally:
            atexit.unregister(self.close)
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    def __enter__(self) -> Any:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def private_directory(prefix: str) -> Path:
    """A new temporary directory stamped with our pid, after removing those that runs killed outright
    (SIGKILL, os._exit: no atexit) left behind."""
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = int((stale / "owner.pid").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours, someone else's, or still being created
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / "owner.pid").write_text(str(os.getpid()))
    return root


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to signal the child when this process dies, so a killed test run leaves
    no service behind. The kernel ties this to the forking thread, so only the main thread uses it."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG, after the identity change that would clear it
        if os.getppid() != parent:
            os._exit(1)

    return preexec
