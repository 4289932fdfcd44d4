"""Build and run ``bench/stepper.c``, the C half of the TCP generator (see its header).

Python logs users in and judges steps; the step itself (offering the load, counting every
receiver's lines, checking content and latency) runs in C, so at N=10 and in the many-rooms
shape the generator is not what limits a fast server.  ``gcc`` is a Debian package; the
harness installs it when missing, like ngircd and InspIRCd.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("stepper.c")


def build(folder: Path | None = None) -> str:
    """Compile the stepper (once per source version and folder); return the binary's path."""
    source = SOURCE.read_bytes()
    folder = Path(folder or tempfile.gettempdir())
    binary = folder / ("chatroom-bench-stepper-%s" % hashlib.sha256(source).hexdigest()[:12])
    if not binary.exists():
        partial = binary.with_suffix(".part")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(partial), str(SOURCE)], check=True)
        partial.replace(binary)
    return str(binary)


def _hex(data: bytes) -> str:
    return data.hex() or "-"


def run(binary: str, *, conns, rate: float, duration: float, grace: float, drain: float,
        tick: float, loud: bool, probe_every: int, irc: bool, timeout: float,
        ws: bool = False) -> dict:
    """One step over ``conns`` (objects with fd, idx, room, seq, sender, sampled, pre, post,
    frames); returns what the stepper printed, parsed."""
    head = "%r %r %r %r %r %d %d %d %d %d\n" % (rate, duration, grace, drain, tick, loud,
                                                probe_every, irc, ws, len(conns))
    rows = ["%d %d %d %d %d %d %s %s %s" % (c.fd, c.idx, c.room, c.seq, c.sender, c.sampled,
                                             _hex(c.pre), _hex(c.post), _hex(c.frames))
            for c in conns]
    proc = subprocess.run([binary], input=(head + "\n".join(rows) + "\n").encode(),
                          stdout=subprocess.PIPE, pass_fds=[c.fd for c in conns],
                          timeout=timeout, check=True)
    out = {"users": {}, "sampled": {}, "errors": []}
    for line in proc.stdout.decode().splitlines():
        kind, _, rest = line.partition(" ")
        f = rest.split()
        if kind == "T":
            out.update(t0=float(f[0]), t_stop=float(f[1]), last_data=float(f[2]),
                       complete_at=float(f[3]), short_in_grace=int(f[4]), max_lag=int(f[5]),
                       cpu_s=float(f[6]))
        elif kind == "C":
            out["users"][int(f[0])] = {"rx": int(f[1]), "seq": int(f[2]), "closed": f[3] == "1",
                                       "pending": b"" if f[4] == "-" else bytes.fromhex(f[4]),
                                       "frames": b"" if f[5] == "-" else bytes.fromhex(f[5])}
        elif kind == "S":
            nlat = int(f[3])
            lat = [float(x) for x in f[4:4 + nlat]]
            rest_ = f[4 + nlat:]
            pairs = rest_[1:]
            out["sampled"][int(f[0])] = {
                "bad": int(f[1]), "tail": b"" if f[2] == "-" else bytes.fromhex(f[2]),
                "lat": lat,
                "next": {int(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}}
        elif kind == "E":
            out["errors"].append(rest)
    return out
