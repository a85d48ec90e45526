"""Load on `fakefinder serve` while two tiny training jobs run: polling latency, stream time to first event,
errors, requests/s; then whether every epoch, metric row and log line arrived, each exactly once.

    .venv/bin/python benchmarks/serve_load.py [--clients 20] [--streams 4] [--seconds 30] [--epochs 15]
        [--users 3]   # named member tokens: every request then carries one, the clients spread over them
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from _common import machine_busy_seconds, own_cpu_seconds, wait_idle

HERE = Path(__file__).resolve().parent
FINISHED = {"succeeded", "failed", "cancelled", "interrupted"}
TINY_JOB = {
    "model_type": "deepfake_detector",
    "base_model": "random:tiny",
    "dataset_path": "faces",
    "batch_size": 8,
    "learning_rate": 0.001,
    "image_size": 32,
    "num_workers": 0,
    "train.trackers": [],
    "train.early_stopping.patience": None,
}  # every epoch runs


# ------------------------------------------------------------------------------------------ the server
def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def child_pids(parent: int) -> list[int]:
    """The live child processes of `parent` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields and int(fields[1]) == parent:
            children.append(int(entry.name))
    return children


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICK  # utime stime cutime cstime
    return own + sum(tree_cpu_seconds(child) for child in child_pids(pid))


class Server:
    """`fakefinder serve` as a child process in its own session; stopped by its pid."""

    def __init__(self, data_dir: Path, host: str, port: int, jobs_per_device: int) -> None:
        self.url = f"http://{host}:{port}"
        self.log_path = data_dir / "serve.log"
        command = [
            sys.executable,
            "-m",
            "fakefinder",
            "serve",
            "--data-dir",
            str(data_dir),
            "--host",
            host,
            "--port",
            str(port),
            "--demo-data",
            "--jobs-per-device",
            str(jobs_per_device),
        ]
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_healthy(self, timeout: float, headers: dict | None = None) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=2, headers=headers).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"no /api/health after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (uvicorn shuts down; the job manager stops its workers), SIGKILL after `timeout`;
        then SIGKILL any job worker of this server still alive (each leads its own session)."""
        workers = child_pids(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pid in [self.process.pid, *workers]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------------------------------ the clients
@dataclass
class Stats:
    """What one client measured; merged after the run."""

    latencies: dict[str, list[float]] = field(default_factory=dict)  # endpoint -> seconds
    errors: list[str] = field(default_factory=list)
    first_event_s: list[float] = field(default_factory=list)  # per stream connection
    connections: int = 0
    events: int = 0
    log_seqs: list[int] = field(default_factory=list)  # every `log` event's seq, in arrival order
    log_texts: dict[int, str] = field(default_factory=dict)
    metric_rows: dict[int, dict] = field(default_factory=dict)  # `metrics` events by their seq
    ended: bool = False


def poller(
    base: str,
    job_ids: list[str],
    index: int,
    stop: threading.Event,
    stats: Stats,
    think_s: float,
    headers: dict | None = None,
) -> None:
    requests = [
        ("job", "/api/training/{id}"),
        ("list", "/api/training"),
        ("metrics", "/api/training/{id}/metrics"),
    ]
    turn = index
    with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
        while not stop.is_set():
            name, template = requests[turn % len(requests)]
            path = template.format(id=job_ids[(turn // len(requests)) % len(job_ids)])
            turn += 1
            started = time.perf_counter()
            try:
                response = client.get(path)
                response.read()
                elapsed = time.perf_counter() - started
                if not 200 <= response.status_code < 300:
                    stats.errors.append(f"GET {path}: {response.status_code} {response.text[:120]}")
            except httpx.HTTPError as exc:
                elapsed = time.perf_counter() - started
                stats.errors.append(f"GET {path}: {type(exc).__name__}: {exc}")
            stats.latencies.setdefault(name, []).append(elapsed)
            if think_s:
                stop.wait(think_s)


def streamer(
    base: str,
    job_id: str,
    reconnect_s: float | None,
    deadline: float,
    abort: threading.Event,
    stats: Stats,
    headers: dict | None = None,
) -> None:
    """Follow the job's log stream until its `end` event; with `reconnect_s`, the server closes each
    connection after that long (`max_seconds`) and the next one resumes at `after=` the last seq."""
    after = 0
    with httpx.Client(base_url=base, timeout=httpx.Timeout(30, read=60), headers=headers) as client:
        while not stats.ended and not abort.is_set() and time.time() < deadline:
            params = {"after": after, **({"max_seconds": reconnect_s} if reconnect_s else {})}
            started = time.perf_counter()
            first = True
            try:
                with client.stream("GET", f"/api/training/{job_id}/logs/stream", params=params) as response:
                    if response.status_code != 200:
                        stats.errors.append(f"stream {job_id}: {response.status_code}")
                        time.sleep(1)
                        continue
                    stats.connections += 1
                    for event, data in sse_events(response.iter_lines()):
                        if first:
                            stats.first_event_s.append(time.perf_counter() - started)
                            first = False
                        stats.events += 1
                        if event == "log":
                            line = json.loads(data)
                            stats.log_seqs.append(line["seq"])
                            stats.log_texts[line["seq"]] = line["text"]
                            after = line["seq"]
                        elif event == "metrics":
                            row = json.loads(data)
                            stats.metric_rows[row["seq"]] = row
                        elif event == "end":
                            stats.ended = True
                            break
                        if abort.is_set():
                            break
            except httpx.HTTPError as exc:
                stats.errors.append(f"stream {job_id}: {type(exc).__name__}: {exc}")
                time.sleep(1)


def sse_events(lines):
    """(event, data) of each server-sent event; comments (keep-alives) skipped."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


# ------------------------------------------------------------------------------------------ checks
def check_job(client: httpx.Client, job_id: str, epochs: int, streams: list[Stats]) -> dict:
    """Whether the job succeeded and everything about it arrived whole: problems found, by name."""
    problems: list[str] = []
    job = client.get(f"/api/training/{job_id}").json()
    if job["state"] != "succeeded":
        problems.append(f"state {job['state']}: {job.get('error')}")
    history = client.get(f"/api/training/{job_id}/metrics").json()["history"]
    epoch_rows = [row for row in history if row["stage"] == "val"]  # one held-out row per epoch
    if [row["epoch"] for row in epoch_rows] != list(range(1, epochs + 1)):
        problems.append(f"metrics epochs {[row['epoch'] for row in epoch_rows]}, expected 1..{epochs}")
    saved_path = Path(job["output_dir"]) / "run" / "history.jsonl"
    saved = [json.loads(line) for line in saved_path.read_text().splitlines()] if saved_path.is_file() else []
    if [row["epoch"] for row in saved] != [row["epoch"] for row in epoch_rows]:
        problems.append(
            f"{saved_path} has epochs {[row['epoch'] for row in saved]}, the API {len(epoch_rows)} rows"
        )
    for ours, theirs in zip(epoch_rows, saved):
        for key, value in theirs.items():
            if isinstance(value, float) and not _same(ours.get(key), value):
                problems.append(
                    f"epoch {theirs['epoch']} {key}: API {ours.get(key)!r}, history.jsonl {value!r}"
                )
    logs = client.get(f"/api/training/{job_id}/logs", params={"tail": 5000}).json()
    seqs = [line["seq"] for line in logs["lines"]]
    if len(seqs) >= 5000:
        problems.append("5000 log lines or more: the check sees only the last 5000")
    if seqs != list(range(1, len(seqs) + 1)) or logs["next"] != (seqs[-1] if seqs else 0):
        problems.append(f"log seqs are not 1..{len(seqs)} (next {logs['next']})")
    texts = {line["seq"]: line["text"] for line in logs["lines"]}
    for number, stream in enumerate(streams):
        if not stream.ended:
            problems.append(f"stream {number} got no end event")
        duplicates = len(stream.log_seqs) - len(set(stream.log_seqs))
        if duplicates:
            problems.append(f"stream {number} got {duplicates} log lines twice")
        if stream.log_seqs != seqs:
            missing = sorted(set(seqs) - set(stream.log_seqs))
            problems.append(
                f"stream {number}: {len(stream.log_seqs)} log events, /logs has {len(seqs)} (missing "
                f"{missing[:10]}{'...' if len(missing) > 10 else ''})"
            )
        if any(stream.log_texts.get(seq) != text for seq, text in texts.items()):
            problems.append(f"stream {number}: a log line's text differs from /logs")
        if sorted(stream.metric_rows) != [row["seq"] for row in history]:
            problems.append(f"stream {number}: metrics events {sorted(stream.metric_rows)} != history seqs")
    return {
        "task_id": job_id,
        "state": job["state"],
        "epochs": len(epoch_rows),
        "log_lines": len(seqs),
        "metric_rows": len(history),
        "run_s": _round((job["finished_at"] or 0) - (job["started_at"] or 0)),
        "streams": len(streams),
        "problems": problems,
    }


def _same(a, b) -> bool:
    return isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# ------------------------------------------------------------------------------------------ figures
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(values: list[float]) -> dict:
    return {
        "count": len(values),
        **{
            name: _round(percentile(values, q) * 1000)
            for name, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99), ("max_ms", 100))
        },
    }


def _round(value: float, digits: int = 1) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def print_report(report: dict) -> None:
    load = report["load"]
    print(
        f"\n{report['clients']} clients ({report['pollers']} polling, {report['streams']} streaming) for "
        f"{load['seconds']:.1f} s against {report['url']}, two jobs of {report['epochs']} epochs, "
        f"{report['cpus']} CPUs"
    )
    cpu = load["cpu_s"]
    print(
        f"  CPU seconds meanwhile: server and its jobs {cpu['server_and_jobs']}, these clients "
        f"{cpu['clients']}, other processes {cpu['other_processes']} (of "
        f"{load['seconds'] * report['cpus']:.0f} available)"
    )
    print(f"\n  {'requests':22s} {'count':>7s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    for name, row in report["latency"].items():
        print(
            f"  {name:22s} {row['count']:7d} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['p99_ms']:8.1f} "
            f"{row['max_ms']:8.1f}"
        )
    ttfe = report["stream"]["first_event"]
    print(
        f"  {'stream: first event':22s} {ttfe['count']:7d} {ttfe['p50_ms']:8.1f} {ttfe['p95_ms']:8.1f} "
        f"{ttfe['p99_ms']:8.1f} {ttfe['max_ms']:8.1f}"
    )
    print(
        f"\n  polling: {load['requests']} requests, {load['requests_per_s']:.1f} requests/s, "
        f"{load['errors']} errors; streams: {report['stream']['connections']} connections, "
        f"{report['stream']['events']} events, {report['stream']['errors']} errors"
    )
    for error in report["error_samples"]:
        print(f"    {error}")
    print(
        f"\n  {'job':24s} {'state':10s} {'epochs':>6s} {'logs':>5s} {'metrics':>7s} {'run s':>6s} "
        f"{'streams':>7s}  check"
    )
    for job in report["jobs"]:
        verdict = "ok" if not job["problems"] else "; ".join(job["problems"])
        print(
            f"  {job['task_id']:24s} {job['state']:10s} {job['epochs']:6d} {job['log_lines']:5d} "
            f"{job['metric_rows']:7d} {job['run_s'] or 0:6.1f} {job['streams']:7d}  {verdict}"
        )
    print(f"\n  {'PASS' if report['passed'] else 'FAIL'}; written to {report['written_to']}")


# ------------------------------------------------------------------------------------------ the run
def user_headers(data_dir: Path, users: int):
    """`users` named member tokens in the server's store; `auth(n)`: the headers of client n (None: none)."""
    tokens = []
    if users:
        from fakefinder.platform.store import JobStore

        store = JobStore(data_dir / "platform.sqlite")
        tokens = [store.add_token(f"load-user-{n}", "member") for n in range(users)]

    def auth(index: int) -> dict | None:
        return {"Authorization": f"Bearer {tokens[index % len(tokens)]}"} if tokens else None

    return auth


def run(args, data_dir: Path) -> dict:
    waited = wait_idle(args.wait_idle)
    port = args.port or free_port(args.host)
    auth = user_headers(data_dir, args.users)
    server = Server(data_dir, args.host, port, args.jobs_per_device)
    abort, stop_polling = threading.Event(), threading.Event()
    try:
        startup_s = server.wait_healthy(args.startup_timeout, auth(0))
        with httpx.Client(base_url=server.url, timeout=30, headers=auth(0)) as client:
            job_ids = []
            for number in range(2):
                response = client.post(
                    "/api/training/start",
                    json={**TINY_JOB, "epochs": args.epochs, "name": f"load-{number}"},
                    headers=auth(number),
                )
                response.raise_for_status()
                job_ids.append(response.json()["task_id"])

            # pollers loop over a job, the job list and a job's metrics with no pause; streamers follow a
            # job's log stream to its end, every other one reconnecting (`after=` its last line) now and then
            streams = [Stats() for _ in range(args.streams)]
            pollers = [Stats() for _ in range(args.clients - args.streams)]
            deadline = time.time() + args.seconds + args.job_timeout
            threads = [
                threading.Thread(
                    target=streamer,
                    daemon=True,
                    name=f"stream-{n}",
                    args=(
                        server.url,
                        job_ids[n % 2],
                        args.reconnect_s if n % 4 >= 2 else None,
                        deadline,
                        abort,
                        stats,
                        auth(n),
                    ),
                )
                for n, stats in enumerate(streams)
            ]
            threads += [
                threading.Thread(
                    target=poller,
                    daemon=True,
                    name=f"poll-{n}",
                    args=(server.url, job_ids, n, stop_polling, stats, args.think_ms / 1000, auth(n)),
                )
                for n, stats in enumerate(pollers)
            ]
            started = time.perf_counter()
            cpu_before = (machine_busy_seconds(), own_cpu_seconds(), tree_cpu_seconds(server.process.pid))
            for thread in threads:
                thread.start()
            time.sleep(args.seconds)
            stop_polling.set()
            for thread in threads[len(streams) :]:
                thread.join()
            load_s = time.perf_counter() - started
            machine, clients, served = (
                after - before
                for after, before in zip(
                    (machine_busy_seconds(), own_cpu_seconds(), tree_cpu_seconds(server.process.pid)),
                    cpu_before,
                )
            )
            states_at_end = {
                job_id: client.get(f"/api/training/{job_id}").json()["state"] for job_id in job_ids
            }

            while time.time() < deadline:  # the jobs finish, the streams see their end
                states = [client.get(f"/api/training/{job_id}").json()["state"] for job_id in job_ids]
                if all(state in FINISHED for state in states) and all(s.ended for s in streams):
                    break
                time.sleep(1)
            for thread in threads[: len(streams)]:
                thread.join(timeout=15)
            jobs = [
                check_job(client, job_id, args.epochs, streams[number::2])
                for number, job_id in enumerate(job_ids)
            ]
    finally:  # also on Ctrl-C, SIGTERM or an error: the clients stop, then the server
        stop_polling.set()
        abort.set()
        server.stop()

    latencies: dict[str, list[float]] = {}
    for stats in pollers:
        for name, values in stats.latencies.items():
            latencies.setdefault(name, []).extend(values)
    every = [value for values in latencies.values() for value in values]
    poll_errors = [error for stats in pollers for error in stats.errors]
    stream_errors = [error for stats in streams for error in stats.errors]
    report = {
        "url": server.url,
        "clients": args.clients,
        "pollers": len(pollers),
        "streams": len(streams),
        "epochs": args.epochs,
        "cpus": len(os.sched_getaffinity(0)),
        "waited_for_idle_s": _round(waited),
        "server_startup_s": _round(startup_s, 2),
        "load": {
            "seconds": round(load_s, 2),
            "requests": len(every),
            "requests_per_s": _round(len(every) / load_s),
            "errors": len(poll_errors),
            "job_states_at_end": states_at_end,
            "think_ms": args.think_ms,
            "cpu_s": {
                "server_and_jobs": _round(served),
                "clients": _round(clients),
                "other_processes": _round(max(0.0, machine - served - clients)),
            },
        },
        "latency": {
            "GET /api/training/{id}": summarize_ms(latencies.get("job", [])),
            "GET /api/training": summarize_ms(latencies.get("list", [])),
            "GET .../{id}/metrics": summarize_ms(latencies.get("metrics", [])),
            "all polling": summarize_ms(every),
        },
        "stream": {
            "first_event": summarize_ms([t for s in streams for t in s.first_event_s]),
            "connections": sum(s.connections for s in streams),
            "events": sum(s.events for s in streams),
            "errors": len(stream_errors),
            "reconnect_s": args.reconnect_s,
        },
        "error_samples": (poll_errors + stream_errors)[:5],
        "jobs": jobs,
    }
    report["passed"] = not poll_errors and not stream_errors and not any(job["problems"] for job in jobs)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=20, help="client threads in all (pollers + streamers)")
    parser.add_argument(
        "--streams", type=int, default=4, help="clients that follow a log stream instead of polling"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the pollers run")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of each of the two jobs")
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause between a poller's requests")
    parser.add_argument(
        "--reconnect-s",
        type=float,
        default=5.0,
        help="half of the streamers reconnect after this long (the stream's max_seconds)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=30.0,
        help="wait at most this long for an idle machine first (0: do not wait)",
    )
    parser.add_argument(
        "--users", type=int, default=0, help="named member tokens the clients spread over (0: no tokens)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--jobs-per-device", type=int, default=2)
    parser.add_argument("--data-dir", help="the server's data folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder (jobs, logs, serve.log)")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument(
        "--job-timeout", type=float, default=600.0, help="longest wait for the jobs after the load"
    )
    args = parser.parse_args()
    if not 0 <= args.streams < args.clients:
        parser.error("--streams must be at least 0 and less than --clients")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: the server is stopped
    created = args.data_dir is None or not Path(args.data_dir).exists()
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="fakefinder-serve-load-")).resolve()
    try:
        report = run(args, data_dir)
    except KeyboardInterrupt:
        print("interrupted: the server and its jobs were stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep or not created:
            print(f"data folder kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    out = HERE / "results" / "serve_load.json"
    out.parent.mkdir(exist_ok=True)
    report["written_to"] = str(out)
    out.write_text(json.dumps(report, indent=1))
    print_report(report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
