"""Worker processes that run a user's verl-style compute_score function for tandem_reward_server.

Each worker is a separate process (multiprocessing "spawn": a fresh interpreter, never a fork of
the threaded gRPC server) that imports the user's file once and then scores one item at a time
over a pipe. A call that runs past the time limit gets its worker killed and replaced; a worker
that dies (segfault in a C extension, os._exit, OOM kill) is replaced too. Either way only that
item fails; an exception raised by the function is that item's error and the worker keeps going.
"""

import importlib.util
import json
import math
import multiprocessing
import os
import queue
import signal
import sys
import traceback

# absl / gRPC status codes used for per-item errors.
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
INTERNAL = 13
UNAVAILABLE = 14


class ItemError(Exception):
    """One item could not be scored; carries a gRPC status code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def load_function(spec):
    """Imports `path/to/file.py:function` and returns the function. Raises ValueError."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"reward function {spec!r}: expected path/to/file.py:function_name")
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"reward function {spec!r}: no such file {path}")
    # The user's folder goes on sys.path so that the file can import its sibling modules.
    sys.path.insert(0, os.path.dirname(path))
    module_name = "tandem_user_reward_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"reward function {spec!r}: {path} defines no callable {name!r}")
    return fn


def normalize_result(value):
    """verl's contract: a number, or a dict with "score" whose other entries are extra info.
    Returns (score, metrics {str: float}, extras {str: str})."""
    if isinstance(value, dict):
        if "score" not in value:
            raise TypeError(f"returned a dict without 'score' (keys: {sorted(value)})")
        score, metrics, extras = value["score"], {}, {}
        for key, v in value.items():
            if key == "score":
                continue
            if isinstance(v, (bool, int, float)) and math.isfinite(float(v)):
                metrics[str(key)] = float(v)
            else:
                extras[str(key)] = str(v)
    else:
        score, metrics, extras = value, {}, {}
    try:
        score = float(score)
    except (TypeError, ValueError):
        raise TypeError(f"returned {type(score).__name__} {score!r} as the score; expected a number")
    if not math.isfinite(score):
        raise TypeError(f"returned a non-finite score ({score})")
    return score, metrics, extras


def _worker_main(conn, spec, reward_kwargs):
    """Runs in the worker process: load once, then answer ("ok", result) / ("error", text)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops us
    try:
        fn = load_function(spec)
    except BaseException:
        conn.send(("load_error", traceback.format_exc(limit=-3)))
        return
    conn.send(("ready", None))
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return  # the server went away
        try:
            result = fn(data_source=item["data_source"], solution_str=item["solution_str"],
                        ground_truth=item["ground_truth"], extra_info=item["extra_info"],
                        **reward_kwargs)
            conn.send(("ok", normalize_result(result)))
        except BaseException as e:  # noqa: BLE001 - any failure is this item's error
            tb = traceback.format_exc(limit=-4)
            conn.send(("error", f"compute_score raised {type(e).__name__}: {e}\n{tb}"))


class _Worker:
    def __init__(self, context, spec, reward_kwargs, startup_timeout):
        self._context = context
        self._spec = spec
        self._kwargs = reward_kwargs
        self._startup_timeout = startup_timeout
        self._process = None
        self._conn = None

    def start(self):
        parent, child = self._context.Pipe(duplex=True)
        self._process = self._context.Process(target=_worker_main,
                                              args=(child, self._spec, self._kwargs), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(self._startup_timeout):
            self.kill()
            raise ItemError(UNAVAILABLE, f"reward worker did not start within "
                                         f"{self._startup_timeout} s")
        try:
            kind, text = parent.recv()
        except EOFError:
            code = self.kill()
            raise ItemError(UNAVAILABLE, f"reward worker died while loading {self._spec} "
                                         f"(exit code {code})")
        if kind == "load_error":
            self.kill()
            raise ValueError(f"loading {self._spec} failed:\n{text}")

    def kill(self):
        """Stops the process; returns its exit code (negative: killed by that signal)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is None:
            return None
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        code = self._process.exitcode
        self._process = None
        return code

    def score(self, item, timeout):
        if self._process is None:
            self.start()
        try:
            self._conn.send(item)
            ready = self._conn.poll(timeout)
        except (EOFError, OSError):
            ready = True  # dead: recv below reports it
        if not ready:
            self.kill()
            raise ItemError(DEADLINE_EXCEEDED, f"compute_score timed out after {timeout} s; "
                                               "worker killed and replaced")
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            code = self.kill()
            how = (f"killed by signal {-code} ({signal.Signals(-code).name})"
                   if code is not None and code < 0 else f"exited with code {code}")
            raise ItemError(INTERNAL, f"reward worker {how} while scoring; replaced")
        if kind == "error":
            raise ItemError(INTERNAL, payload)
        return payload


class WorkerPool:
    """`size` worker processes; score() borrows an idle one (blocking while all are busy)."""

    def __init__(self, spec, size, timeout, reward_kwargs=None, startup_timeout=60.0):
        self._timeout = timeout
        self._idle = queue.Queue()
        context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(context, spec, reward_kwargs or {}, startup_timeout)
                         for _ in range(size)]
        for w in self._workers:
            w.start()  # fails fast (ValueError) when the file or function is wrong
            self._idle.put(w)

    def score(self, data_source, solution_str, ground_truth, extra_info_json):
        """Returns (score, metrics, extras); raises ItemError for this item's failure."""
        try:
            extra_info = json.loads(extra_info_json) if extra_info_json else None
        except json.JSONDecodeError as e:
            raise ItemError(INVALID_ARGUMENT, f"extra_info_json is not JSON: {e}")
        item = {"data_source": data_source, "solution_str": solution_str,
                "ground_truth": ground_truth, "extra_info": extra_info}
        worker = self._idle.get()
        try:
            return worker.score(item, self._timeout)
        finally:
            self._idle.put(worker)

    def close(self):
        for w in self._workers:
            w.kill()
