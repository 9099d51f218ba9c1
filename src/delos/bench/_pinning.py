"""Which cores run what: the system under test on one core, the load on another.

On a two-core machine, a gateway that floats between both cores shares them with h2load and the
upstream, and its throughput then says as much about the scheduler as about the gateway. Pinned,
every server under test (gateway, bare echo, minimal forwarder, peers) gets the first core to
itself and the load side (the benchmark's own process with its clients, h2load, the upstream, the
fakes, py-spy) the second: they inherit it from the benchmark's process, which pins itself first.
A measurement that must leave the placement to the OS (two workers against one) starts its
processes on every core and widens the benchmark's own affinity meanwhile
(:func:`pin_this_process` with :attr:`Pinning.machine`).

Processes are started through ``taskset --cpu-list CORES``, which sets the affinity and execs the
command, so every thread it ever starts inherits it. (Not a ``preexec_fn``: that forces a plain
``fork()`` of the benchmark's process, grpcio threads and all, and runs Python in the child.)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Pinning", "pin_this_process", "pinned_command"]


def _available_cores() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux: no affinity to set
        return ()


@dataclass(frozen=True, slots=True)
class Pinning:
    """The cores of the servers under test and of the load side; empty: not pinned."""

    server: tuple[int, ...] = ()
    load: tuple[int, ...] = ()
    #: Every core this process may run on (when pinning is active).
    machine: tuple[int, ...] = ()
    #: Why there is no pinning, when there is none.
    reason: str = ""

    @classmethod
    def detect(cls, *, enabled: bool = True) -> Pinning:
        """The first two cores this process may run on, or no pinning (with the reason)."""
        if not enabled:
            return cls(reason="pinning turned off (`--no-pin`)")
        cores = _available_cores()
        if len(cores) < 2:
            return cls(reason=f"{len(cores) or 'an unknown number of'} core(s) available")
        if shutil.which("taskset") is None:
            return cls(reason="`taskset` (util-linux) is not installed")
        return cls(server=(cores[0],), load=(cores[1],), machine=cores)

    @property
    def active(self) -> bool:
        return bool(self.server)

    def cores(self, *, under_test: bool, unpinned: bool = False) -> tuple[int, ...]:
        """The cores to start a process on: the server core for a server under test, those of
        this process (the load core) otherwise, every core when ``unpinned``; empty: inherit."""
        if unpinned:
            return self.machine
        return self.server if under_test else ()

    def describe(self) -> str:
        """One sentence for a suite's method text."""
        if not self.active:
            return f"Nothing is pinned to a core: {self.reason}."
        return (
            f"Pinned with `sched_setaffinity`: the server under test on core "
            f"{_cores(self.server)}; h2load, the upstream, the fakes and the benchmark's own "
            f"clients on core {_cores(self.load)}."
        )

    def fact(self) -> str:
        """The same in a few words, for the machine table."""
        if not self.active:
            return f"none ({self.reason})"
        return f"server under test on core {_cores(self.server)}, load on core {_cores(self.load)}"


def _cores(cores: Sequence[int]) -> str:
    return ",".join(str(core) for core in cores)


def pinned_command(command: Sequence[str], cores: Sequence[int]) -> list[str]:
    """``command`` run on ``cores`` only (as it is when ``cores`` is empty)."""
    if not cores:
        return list(command)
    return ["taskset", "--cpu-list", _cores(cores), *command]


@contextmanager
def pin_this_process(cores: Sequence[int]) -> Iterator[None]:
    """Run the block with this process on ``cores``, then restore its affinity."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cores))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
