"""The load generator: Mosquitto's own C client, several ``mosquitto_pub -l`` processes at QoS 1, one device
topic each (``-l`` publishes every line of its input to one topic), fed from pre-built lines by one thread.

A Python publisher tops out near 7,000 msg/s on this machine, below what a bare subscriber takes: every
figure measured with it measured the generator. The C clients are not the wall; their own pace is reported
beside every result so a reader can check: messages the broker acknowledged (PUBACK, counted from
mosquitto_pub's ``-d`` output) per second, from the first line fed to the last acknowledgement.

Their input stays open until :meth:`CLoad.finish` (called once the consumer has every message): Debian 12's
mosquitto_pub 2.0.11 exits at end of input without sending the QoS 1 messages it still has queued.
With ``rate``, lines are fed at that many messages per second in total; with ``stamp``, each payload's
``time`` is the moment it is fed (to measure lag from publish to commit).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from benchmarks.common import METRICS5


def payload(t: float, i: int) -> bytes:
    """One air-quality device's message: 5 readings at time ``t``."""
    doc = {"time": round(t, 6), "readings": {m: round(5 + (i * 7 + k) % 40 * 0.5, 1) for k, m in enumerate(METRICS5)}}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def stream(n: int, t0: float, step_s: float = 1.0) -> bytes:
    """n messages of one device, ``step_s`` apart from ``t0``: the input of one publisher."""
    return b"".join(payload(t0 + i * step_s, i) for i in range(n))


class CLoad:
    """``len(devices)`` mosquitto_pub processes, process i publishing ``counts[i]`` messages as ``devices[i]``
    with ``accounts[i]`` (mosquitto_pub's -i/-u/-P arguments: a bridge account each, its client id bound)."""

    def __init__(self, port: int, accounts: list[list[str]], devices: list[str], n: int, t0: float, *, rate: float = 0,
                 stamp: bool = False, step_s: float = 1.0, topic: str | None = None):
        self.devices = devices
        self.n = n
        per, extra = divmod(n, len(devices))
        self.counts = [per + (1 if i < extra else 0) for i in range(len(devices))]
        self._t0, self._rate, self._stamp, self._step = t0, rate, stamp, step_s
        # pre-built input when fed as fast as the clients read; fed line by line otherwise (paced, or stamped)
        self._inputs = None if stamp or rate else [stream(c, t0, step_s) for c in self.counts]
        self.procs = [
            # stdbuf -oL: each debug line as it happens (a pipe is otherwise block-buffered until exit)
            subprocess.Popen(["stdbuf", "-oL", "mosquitto_pub", "-d", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-l", "-M", "1000",
                              "-t", topic or f"city/v1/devices/{d}/readings", *accounts[i]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i, d in enumerate(devices)]
        self.start = self.fed_at = 0.0
        self.acked = [0] * len(devices)
        self.acked_at = [0.0] * len(devices)
        self._feeder: threading.Thread | None = None
        self._readers = [threading.Thread(target=self._count_acks, args=(i,), daemon=True) for i in range(len(devices))]
        for t in self._readers:
            t.start()

    def _count_acks(self, i: int) -> None:
        """Counts the broker's PUBACKs in client i's debug output (read in large chunks: cheap)."""
        fd = self.procs[i].stdout.fileno()
        tail = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            data = tail + chunk
            self.acked[i] += data.count(b"received PUBACK")
            tail = data[-20:]
            if tail.count(b"received PUBACK"):  # do not count a match twice across chunks
                tail = b""
            if self.acked[i] >= self.counts[i] and not self.acked_at[i]:
                self.acked_at[i] = time.time()

    def begin(self) -> "CLoad":
        time.sleep(0.3)  # let the clients connect
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"mosquitto_pub exited: {p.stderr.read().decode(errors='replace')[:300]}")
        self.start = time.time()
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()
        return self

    def _feed(self) -> None:
        if self._inputs is not None:
            # As fast as the clients read: one writer thread per client, so a slow one does not hold the rest.
            def write(p, data):
                p.stdin.write(data)
                p.stdin.flush()
            ts = [threading.Thread(target=write, args=(p, d)) for p, d in zip(self.procs, self._inputs)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        else:
            per_client = [0] * len(self.procs)
            total = sum(self.counts)
            for k in range(total):
                due = self.start + k / self._rate if self._rate else 0
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                i = k % len(self.procs)
                while per_client[i] >= self.counts[i]:
                    i = (i + 1) % len(self.procs)
                j = per_client[i]
                per_client[i] += 1
                t = time.time() if self._stamp else self._t0 + j * self._step
                self.procs[i].stdin.write(payload(t, j))
                self.procs[i].stdin.flush()
        self.fed_at = time.time()

    def wait_fed(self, timeout: float = 900) -> None:
        self._feeder.join(timeout)

    @property
    def pace(self) -> float:
        """The generator's own pace: messages the broker acknowledged per second, first line to last PUBACK."""
        if not all(self.acked_at):
            return float("nan")
        return sum(self.acked) / (max(self.acked_at) - self.start)

    def finish(self) -> dict:
        """Close the inputs (after the consumer has every message) and let the clients exit."""
        self.wait_fed()
        for p in self.procs:
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for t in self._readers:
            t.join(10)
        return {"publishers": len(self.procs), "sent": self.n, "acknowledged": sum(self.acked), "start": self.start,
                "fed_seconds": self.fed_at - self.start, "generator_msg_per_s": self.pace}
