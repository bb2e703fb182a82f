"""Drop the native runtimes' start-up noise (oneDNN and CPU-feature notices, "Could not find cuda drivers", absl pre-init).

Those lines are written by C++ straight to file descriptor 2 before TF_CPP_MIN_LOG_LEVEL is read, so
only an fd-level filter removes them. Python's own ``sys.stderr`` (progress bars, error messages) is
moved to a duplicate of the real stderr first, so none of it passes through the filter or can be lost.

What is dropped does not depend on the CPU: every native *info* line in glog/absl format (the
oneDNN notice that Intel and AMD builds print, the CPU-feature notice with its continuation line,
and whatever a later TensorFlow adds), plus the CUDA warnings and errors a machine without a GPU
gets. Warnings and errors from anything else pass. ``--verbose`` (or ``-v``) on the command line
turns the filter off, so every notice is shown.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:. ]+\d+ [\w./-]+\.(cc|cpp|h):\d+\] .*"  # every native info notice, whatever the CPU
    rb"|[WE]\d{4} [\d:. ]+\d+ (cudart_stub|cuda_platform|cuda_executor|cuda_dnn|cuda_fft|cuda_blas|cuda_diagnostics"
    rb"|gpu_device|gpu_init)\.cc:\d+\].*"
    rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.)$"
)
# First bytes a noise line can start with: a partial line starting otherwise is passed on at once.
_MAYBE_NOISE = (b"W", b"I", b"E", b"T")


def install(verbose: bool | None = None) -> None:
    """Filter fd 2 of this process for the rest of its life (no-op when stderr is not a real fd).

    ``verbose`` (default: ``--verbose`` or ``-v`` among the command-line arguments) leaves stderr alone.
    """
    if verbose is None:
        verbose = any(arg in ("--verbose", "-v") for arg in sys.argv[1:])
    if verbose:
        return
    try:
        real = os.dup(2)
    except OSError:
        return
    sys.stderr.flush()
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_pump, args=(read_end, real), daemon=True, name="stylesift-stderr-filter")
    thread.start()

    def _drain():
        os.dup2(real, 2)  # closes the last write end of the pipe, so the pump sees EOF
        thread.join(timeout=1)

    atexit.register(_drain)


def _pump(read_end: int, real: int) -> None:
    pending = b""
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
        if pending and not pending.startswith(_MAYBE_NOISE):
            out, pending = out + pending, b""  # a partial line that cannot be noise: pass it on now
        if out:
            os.write(real, out)
    if pending and not NOISE.match(pending):
        os.write(real, pending)
