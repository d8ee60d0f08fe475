"""Shared helpers of scripts/stress-overload and scripts/stress-soak (stdlib only).

Starts target/release/dlserve on a copy of the shipped models/, samples its memory from
/proc/PID/status, writes request bodies, and runs oha (open- or closed-loop) with a per-request
SQLite log (--db-url) so latencies can be split by status code.
"""

import base64
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TOKEN = "stress-admin-token"

# A real row of the Wisconsin diagnostic data set (benign), in the model's feature order.
ANOMALY_ROW = [13.54, 14.36, 87.46, 566.3, 0.09779, 0.08129, 0.06664, 0.04781, 0.1885, 0.05766,
               0.2699, 0.7886, 2.058, 23.56, 0.008462, 0.0146, 0.02387, 0.01315, 0.0198, 0.0023,
               15.11, 19.26, 99.7, 711.2, 0.144, 0.1773, 0.239, 0.1288, 0.2977, 0.07259]
# Mauna Loa monthly means, 1959-1960 (ppm).
CO2_SERIES = [315.4, 316.3, 316.9, 317.6, 318.5, 318.0, 316.6, 314.8, 313.8, 313.3, 314.6, 315.6,
              316.3, 316.9, 317.5, 318.4, 318.9, 318.5, 317.1, 315.3, 313.9, 313.9, 314.9, 315.8]


def find_oha():
    for p in (os.path.join(ROOT, "bench/bin/oha"), os.path.join(ROOT, ".cache/oha/bin/oha"),
              os.path.expanduser("~/.cargo/bin/oha"), shutil.which("oha")):
        if p and os.access(p, os.X_OK):
            return p
    sys.exit("stress: oha not found (bench/bin/oha, .cache/oha/bin/oha, ~/.cargo/bin/oha or PATH); "
             "run scripts/bench-setup or `cargo install oha --locked`")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def digit_png():
    path = os.path.join(ROOT, "tests/data/digits")
    name = sorted(f for f in os.listdir(path) if f.endswith(".png") and "paper" not in f)[0]
    with open(os.path.join(path, name), "rb") as f:
        return f.read()


class Server:
    """target/release/dlserve on a private copy of models/, with an admin token."""

    def __init__(self, extra_args=(), log_name="server.log", prepare=None):
        """prepare(models_dir), when given, may edit the private copy of models/ before start."""
        self.bin = os.environ.get("DLSERVE_BIN", os.path.join(ROOT, "target/release/dlserve"))
        if not os.access(self.bin, os.X_OK):
            sys.exit(f"stress: {self.bin} is not built (make build)")
        self.work = tempfile.mkdtemp(prefix="dlserve-stress-")
        self.models = os.path.join(self.work, "models")
        shutil.copytree(os.path.join(ROOT, "models"), self.models)
        if prepare:
            prepare(self.models)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.work, log_name)
        self.log = open(self.log_path, "wb")
        args = [self.bin, "--addr", f"127.0.0.1:{self.port}", "--models-dir", self.models,
                "--admin-token", TOKEN, *extra_args]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"stress: the server exited at start-up ({self.proc.returncode}); see {self.log_path}")
            try:
                if urllib.request.urlopen(self.base + "/health/ready", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        else:
            sys.exit("stress: the server did not become ready in 120 s")

    def alive(self):
        return self.proc.poll() is None

    def memory_kib(self):
        """(VmRSS, VmHWM) in KiB, or None when the process is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
        except (OSError, KeyError, ValueError):
            return None

    def post(self, path, body=b"", headers=None, timeout=60):
        req = urllib.request.Request(self.base + path, data=body, method="POST", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self):
        """SIGTERM, wait for the drain; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def log_size(self):
        self.log.flush()
        return os.path.getsize(self.log_path)

    def panics(self):
        with open(self.log_path, "rb") as f:
            return [l.decode(errors="replace").strip() for l in f if b"panicked" in l]

    def cleanup(self, keep_log_to=None):
        if keep_log_to:
            shutil.copy(self.log_path, keep_log_to)
        shutil.rmtree(self.work, ignore_errors=True)


class MemorySampler(threading.Thread):
    """Samples (t, VmRSS KiB, VmHWM KiB) every `period` seconds."""

    def __init__(self, server, period=0.5):
        super().__init__(daemon=True)
        self.server, self.period, self.samples, self.stopped = server, period, [], threading.Event()
        self.t0 = time.time()

    def run(self):
        while not self.stopped.is_set():
            m = self.server.memory_kib()
            if m:
                self.samples.append((time.time() - self.t0, m[0], m[1]))
            self.stopped.wait(self.period)

    def stop(self):
        self.stopped.set()
        self.join()

    def between(self, a, b):
        return [s for s in self.samples if a <= s[0] <= b]


def write_bodies(dirpath):
    """Request bodies for every endpoint; returns {name: (method, path, body file, content type)}."""
    os.makedirs(dirpath, exist_ok=True)
    png = digit_png()
    bodies = {
        "classify": ("POST", "/classify?model=digits-cnn", png, "image/png"),
        "classify_json": ("POST", "/classify", json.dumps(
            {"model": "digits-cnn", "top_k": 3, "images": [{"base64": base64.b64encode(png).decode()}]}).encode(),
            "application/json"),
        "forecast": ("POST", "/forecast", json.dumps(
            {"model": "co2-lstm", "series": CO2_SERIES, "horizon": 12, "start": "1959-01-01",
             "frequency": "MS"}).encode(), "application/json"),
        "anomaly": ("POST", "/anomaly", json.dumps(
            {"model": "cancer-ae", "rows": [ANOMALY_ROW], "top_features": 3}).encode(), "application/json"),
        "generate": ("GET", "/generate?model=digits-cgan&n=4&seed=7&format=png", None, None),
        "v2_infer": ("POST", "/v2/models/cancer-ae/infer", json.dumps(
            {"id": "soak", "inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32",
                                       "data": ANOMALY_ROW}]}).encode(), "application/json"),
    }
    # Heavier requests for the overload test: many items per request, so the server's capacity in
    # requests per second is low enough that a load generator sharing the machine can offer 10x.
    # anomaly_max: the per-request item limit (256 rows, about 60 KB), for exploratory runs.
    for name, n in (("anomaly_batch", 32), ("anomaly_max", 256)):
        rows = [[round(v * (1 + 0.01 * ((i * 7 + j) % 5 - 2)), 6) for j, v in enumerate(ANOMALY_ROW)] for i in range(n)]
        bodies[name] = ("POST", "/anomaly", json.dumps(
            {"model": "cancer-ae", "rows": rows, "top_features": 3}).encode(), "application/json")
    digits = os.path.join(ROOT, "tests/data/digits")
    pngs = [open(os.path.join(digits, f), "rb").read() for f in sorted(os.listdir(digits)) if f.endswith(".png")][:8]
    bodies["classify_batch"] = ("POST", "/classify", json.dumps(
        {"model": "digits-cnn", "top_k": 3, "images": [{"base64": base64.b64encode(b).decode()} for b in pngs]}).encode(),
        "application/json")
    out = {}
    for name, (method, path, body, ctype) in bodies.items():
        f = None
        if body is not None:
            f = os.path.join(dirpath, name + ".body")
            with open(f, "wb") as fh:
                fh.write(body)
        out[name] = (method, path, f, ctype)
    return out


def oha(server, spec, *, duration_s, connections, rate=None, deadline_ms=None, db=None, timeout_s=30):
    """Runs oha against one endpoint; returns (its JSON summary, the Popen) once it ends.

    -w: requests in flight when the duration ends are waited for, not aborted and counted as errors.
    rate=None is closed-loop (each connection sends the next request when the last one is answered);
    a rate is open-loop (-q, requests start on schedule whether or not earlier ones have finished,
    as long as a connection is free)."""
    method, path, body_file, ctype = spec
    cmd = [find_oha(), "--no-tui", "--output-format", "json", "-z", f"{duration_s}s", "-c", str(connections),
           "-m", method, "-t", f"{timeout_s}s", "--disable-compression", "-w"]
    if rate:
        cmd += ["-q", str(rate)]
    if body_file:
        cmd += ["-D", body_file]
    if ctype:
        cmd += ["-T", ctype]
    if deadline_ms:
        cmd += ["-H", f"x-deadline-ms: {deadline_ms}"]
    if db:
        if os.path.exists(db):
            os.remove(db)
        cmd += ["--db-url", db]
    cmd.append(server.base + path)
    return cmd


def served_rate(summary):
    """(200 responses per second, count of every other outcome) of an oha run's JSON summary."""
    statuses = summary.get("statusCodeDistribution", {})
    ok = statuses.get("200", 0)
    others = sum(statuses.values()) - ok + sum(summary.get("errorDistribution", {}).values())
    return ok / summary["summary"]["total"], others


def run_oha(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        sys.exit(f"stress: oha failed ({p.returncode}): {p.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(p.stdout)


def read_db(db):
    """Rows of oha's per-request log: (start s, duration s, status); errors have status NULL/0."""
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(oha)")]
    rows = con.execute("SELECT start, duration, status FROM oha").fetchall()
    con.close()
    return cols, rows


def server_latencies(log_path, start=0, end=None):
    """Server-side latency (ms) by status from a --log-format json log: one "response" line per request,
    measured by the HTTP layer from the parsed request to the response."""
    out = {}
    with open(log_path, "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(end - start)
        for line in data.splitlines():
            if b'"response"' not in line:
                continue
            try:
                j = json.loads(line)
            except ValueError:
                continue
            fields = j.get("fields", j)
            st, lat = fields.get("status"), fields.get("latency_ms")
            if st is not None and lat is not None:
                out.setdefault(int(st), []).append(float(lat))
    return out


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]
