"""Turn a backend's communication failure into a clear DdlaError.

torch.distributed reports every failure as ``RuntimeError`` (or its subclass
``torch.distributed.DistBackendError``) with the backend's text. Measured with gloo on
torch 2.13:

* a call that exceeds its timeout: ``"[.../gloo/transport/tcp/unbound_buffer.cc:78] Timed out
  waiting 2000ms for recv operation to complete"`` (collectives too: gloo honours the per-op
  timeout), or ``"Operation timed out!"`` from ``Work.wait(timeout)``;
* any later call on a connection that a timeout closed: ``"Application timeout caused pair
  closure"``;
* a peer process that died (before or during the call): ``"[.../gloo/transport/tcp/pair.cc:553]
  Connection closed by peer [127.0.0.1]:PORT. This is typically caused by a remote worker
  crashing..."``, raised at once, without waiting for the timeout.

The text is the only signal the backend gives, so it is matched here, in one place, and mapped
to :class:`CommTimeoutError`, :class:`PeerFailedError` or (anything else) :class:`CommError`.

Example:
    >>> err = comm_failure(RuntimeError("Operation timed out!"), op="recv", tag="train",
    ...                    where="rank 1", timeout_s=2.0)
    >>> type(err).__name__
    'CommTimeoutError'
    >>> print(err)
    recv (tag 'train') timed out after 2 s waiting for rank 1 (Operation timed out!)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from ddla.errors import CommError, CommTimeoutError, PeerFailedError

# Lower-case fragments of backend messages (gloo's TCP transport, POSIX socket errors, NCCL).
_PEER_GONE = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "connection refused",
    "socket closed",
    "communicator was aborted",
)
log = logging.getLogger("ddla.agent")
_TIMED_OUT = ("timed out", "timeout")
_SOURCE_PREFIX = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*")


def _short(exc: BaseException) -> str:
    """The backend message: first line, without the C++ source location, at most 200 chars."""
    lines = str(exc).strip().splitlines()
    text = _SOURCE_PREFIX.sub("", lines[0]) if lines else type(exc).__name__
    for end in (". This is typically", ". Check the logs"):  # gloo's generic advice
        text = text.split(end)[0]
    return text if len(text) <= 200 else text[:197] + "..."


def comm_failure(
    exc: BaseException, *, op: str, tag: str, where: str, timeout_s: float
) -> CommError:
    """Map backend exception ``exc`` raised by ``op`` to a DdlaError naming op, tag and peer.

    ``where`` names the peer (``"rank 1"``) for point-to-point calls or the group for
    collectives; ``timeout_s`` is the limit the call ran under.
    """
    raw = _short(exc)
    low = raw.lower()
    if "pair closure" in low:
        return CommTimeoutError(
            f"{op} (tag {tag!r}) with {where} failed: an earlier timeout closed the connection "
            f"({raw})",
            help="a Transport whose call timed out cannot talk to that peer again; "
            "restart the agents or resume from the last checkpoint",
        )
    if any(marker in low for marker in _PEER_GONE):
        return PeerFailedError(
            f"{op} (tag {tag!r}) failed: {where} closed the connection, the agent probably "
            f"died ({raw})",
            help="check that agent's log for its error, then restart the run or resume "
            "from the last checkpoint",
        )
    if any(marker in low for marker in _TIMED_OUT):
        return CommTimeoutError(
            f"{op} (tag {tag!r}) timed out after {timeout_s:g} s waiting for {where} ({raw})",
            help="a peer is slow, stuck or dead: check its log; if the network is just slow, "
            "raise the communication timeout",
        )
    return CommError(
        f"{op} (tag {tag!r}) with {where} failed: {raw}",
        help="check every agent's log; all agents must call the same ops in the same order "
        "with tensors of the same shape and dtype",
    )


def is_comm_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a backend communication failure (raw, e.g. from inside DDP, or mapped)."""
    if isinstance(exc, CommError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    low = _short(exc).lower()
    return any(m in low for m in (*_PEER_GONE, *_TIMED_OUT, "pair closure"))


def name_silent_peers(
    exc: BaseException, silent: list[int], *, op: str, tag: str, where: str, timeout_s: float
) -> CommError:
    """The error to report for communication failure ``exc`` when ``silent`` peers stopped
    answering (their heartbeats stopped; see :mod:`ddla.comm.heartbeat`).

    A raw backend error (one raised inside DDP's C++ all-reduce, which bypasses the Transport)
    is first mapped as ``op``; with ``silent`` empty the mapped error is returned unchanged.

    Example:
        >>> err = name_silent_peers(RuntimeError("Timed out waiting 5000ms for recv"), [2],
        ...                         op="all_reduce", tag="train", where="the group",
        ...                         timeout_s=5)
        >>> print(err)  # doctest: +NORMALIZE_WHITESPACE
        agent 2 stopped answering (its heartbeat stopped: stuck, paused or swapped out):
        all_reduce (tag 'train') timed out after 5 s waiting for the group (Timed out waiting
        5000ms for recv)
    """
    err = (
        exc
        if isinstance(exc, CommError)
        else comm_failure(exc, op=op, tag=tag, where=where, timeout_s=timeout_s)
    )
    if not silent:
        return err
    who = ("agent " if len(silent) == 1 else "agents ") + ", ".join(map(str, silent))
    cls = type(err) if isinstance(err, CommTimeoutError | PeerFailedError) else CommTimeoutError
    return cls(
        f"{who} stopped answering (its heartbeat stopped: stuck, paused or swapped out): {err}",
        help=f"look at {who}: its process is alive but not running (e.g. stopped with SIGSTOP, "
        "or its machine hangs); restart the run, or resume from the last checkpoint",
    )


def explain_failure(
    exc: BaseException, silent_peers: Callable[[], list[int]], *, world_size: int, timeout_s: float
) -> BaseException:
    """An agent's failure as reported: a communication failure with the peers that stopped
    answering named (``silent_peers``, by heartbeat); anything else unchanged.

    DDP's built-in all-reduce runs in C++ and bypasses the Transport, so its timeouts arrive
    here as raw backend RuntimeErrors; they are mapped like the Transport's own.
    """
    if not is_comm_failure(exc):
        return exc
    silent = silent_peers()
    log.info("communication failed; peers whose heartbeat stopped: %s", silent or "none")
    if not silent and isinstance(exc, CommError):
        return exc
    return name_silent_peers(
        exc,
        silent,
        op="all_reduce (DDP gradients)",
        tag="train",
        where=f"the group of {world_size} agents",
        timeout_s=timeout_s,
    )
