"""Third-party chatter off for user-facing commands (``hyperver demo``, ``hyperver serve``).

TensorFlow, TFLite, absl and faiss log start-up notices (oneDNN, CPU instructions, XNNPACK, "Could
not load library with AVX512 support") that look like errors to a newcomer. Commands call
:func:`quiet_third_party` first thing in their ``run`` (never at import: a library must not change
its caller's logging), and ``--verbose`` skips it. TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once,
when it is imported, so the call has to come before anything imports tensorflow.

Some lines are written by C/C++ code straight to the file descriptors before any log level is
read (absl's "All log messages before absl::InitializeLog()", TensorFlow's oneDNN notice, TFLite's
XNNPACK line); :func:`native_output_to` sends those to a log file while Python's own output
(the command's report, tqdm bars) still reaches the terminal.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

NOISY_LOGGERS = {"tensorflow": logging.ERROR, "absl": logging.ERROR, "faiss.loader": logging.WARNING,
                 "h5py": logging.WARNING, "matplotlib": logging.WARNING}


def quiet_third_party(verbose: bool = False) -> None:
    """Hide third-party log noise in this process and the processes it starts (unless ``verbose``).

    Values the user set in the environment win (``setdefault``), so ``TF_CPP_MIN_LOG_LEVEL=0``
    still shows TensorFlow's log without ``--verbose``.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")    # TensorFlow's C++ INFO/WARNING/ERROR lines
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")      # grpc, loaded by tensorflow
    for name, level in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # All of them: library deprecations point at our call sites (torch.onnx.export's is reported
    # from supernet/export.py), so filtering by module cannot tell them apart. Our packages warn nowhere.
    warnings.filterwarnings("ignore")


@contextlib.contextmanager
def native_output_to(log_path: str | Path | None) -> Iterator[Path | None]:
    """For the block, send what C/C++ code writes to file descriptors 1 and 2 to ``log_path``
    (appended); ``sys.stdout`` / ``sys.stderr`` keep writing to where they wrote before.

    ``None`` changes nothing (``--verbose``). If the block raises, a line on stderr says where
    the hidden output is.
    """
    if log_path is None:
        yield None
        return
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:      # no descriptors to redirect (closed): nothing to hide
        yield None
        return
    old_streams = sys.stdout, sys.stderr
    # Python's streams that wrote to fd 1 / 2 move to copies of those descriptors: they keep
    # reaching the terminal. Others (a StringIO, pytest's capture) are left as they are.
    new_out, new_err = _rebound(sys.stdout, 1, saved[0]), _rebound(sys.stderr, 2, saved[1])
    failed = False
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout, sys.stderr = new_out, new_err
        try:
            yield log_path
        except BaseException:
            failed = True
            raise
        finally:
            for stream in (new_out, new_err, *old_streams):
                with contextlib.suppress(ValueError, OSError):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sys.stdout, sys.stderr = old_streams
            for stream, was in ((new_out, old_streams[0]), (new_err, old_streams[1])):
                if stream is not was:
                    with contextlib.suppress(ValueError, OSError):
                        stream.close()      # closefd=False: the descriptor itself is closed below
            for fd in saved:
                os.close(fd)
            if failed:
                print(f"(third-party output hidden during this run: {log_path}; --verbose shows it)", file=sys.stderr)


def _rebound(stream, fd: int, copy_fd: int):
    """``stream`` writing to ``copy_fd`` instead, if it wrote to ``fd``; else ``stream`` itself."""
    try:
        uses_fd = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        uses_fd = False
    if not uses_fd:
        return stream
    return io.TextIOWrapper(io.FileIO(copy_fd, "w", closefd=False), encoding=getattr(stream, "encoding", None),
                            errors=getattr(stream, "errors", None) or "strict", line_buffering=True,
                            write_through=fd == 2)
