"""Rank0's overlap pipeline: one comms thread owns every dist call between startup and shutdown.

The main thread builds envelopes (Phase A) and decodes results (Phase C); it hands prepared
envelopes to the comms thread through ``send_q`` (bound D_in) and takes results from ``recv_q``
(bound D_out).  The comms thread posts envelopes with isend (gloo sends rendezvous, and a blocking
send would stop it from receiving), and receives results in order.  gloo's irecv cannot be polled
(``is_completed`` stays False until ``wait``), so a result receive blocks; an envelope queued
meanwhile goes out as soon as the result lands, which is when the mesh can take it anyway.

Drain before fill: the main thread never has more than D_in envelopes outstanding, and takes a
result before it enqueues beyond that, so neither ``put`` can block the other thread for ever.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from lockstep.tracefmt import schema as S
from lockstep.spec import contract as C

from .comm import Comm
from .envelope import Message, Prepared
from .errors import Ids
from .wire import p2p_post, p2p_recv_header, p2p_recv_payload

STOP = object()


@dataclass
class Received:
    msg: Message            # the result
    header_action: C.Action
    t_send: float
    t_recv: float


@dataclass
class CommsFailure:
    error: BaseException


class CommsThread(threading.Thread):
    def __init__(self, comm: Comm, group: str, dst: int, d_in: int, d_out: int, trace: S.TraceWriter):
        super().__init__(name="lockstep-comms", daemon=True)
        self.comm, self.group, self.dst, self.trace = comm, group, dst, trace
        self.send_q: queue.Queue = queue.Queue(maxsize=d_in)
        self.recv_q: queue.Queue = queue.Queue(maxsize=d_out)
        self.inflight: deque = deque()
        self.max_inflight = 0

    def run(self) -> None:
        try:
            while True:
                try:
                    item = self.send_q.get(block=not self.inflight)
                except queue.Empty:
                    item = None
                if item is STOP:
                    return
                if item is not None:
                    prep: Prepared = item
                    pend = p2p_post(self.comm, self.group, self.dst, prep, result=False, blocking=False)
                    t_send = time.time()
                    if prep.action == C.Action.INFER:
                        self.inflight.append((prep, pend, t_send))
                        self.max_inflight = max(self.max_inflight, len(self.inflight))
                    else:
                        for p in pend:
                            p.wait()
                    continue
                self.recv_q.put(self._receive_one())
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which exits
            self.recv_q.put(CommsFailure(e))

    def _receive_one(self) -> Received:
        prep, pend, t_send = self.inflight[0]
        dev = prep.header.device
        action, ids = p2p_recv_header(self.comm, self.group, self.dst, dev, result=True)
        msg = p2p_recv_payload(self.comm, self.group, self.dst, "result", ids, dev)
        t_recv = time.time()
        self.trace.emit(S.RESULT_RECV, ok=bool(msg.meta.get("ok")), **Ids(
            msg.meta.get("call_id", ids.call_id), msg.meta.get("chunk_index", ids.chunk_index),
            msg.meta.get("cache_epoch", ids.cache_epoch)).as_dict(), header_action=action.name)
        self.inflight.popleft()
        for p in pend:
            p.wait()  # the peer consumed the envelope before it could answer
        return Received(msg, action, t_send, t_recv)

    def stop(self, timeout: float) -> bool:
        """Sentinel then join; False means the thread is wedged: the process is poisoned."""
        try:
            self.send_q.put(STOP, timeout=timeout)
        except queue.Full:
            return False
        self.join(timeout)
        return not self.is_alive()
