"""A property written once as a monitor over event names (docs/writing-a-spec.md, "Properties as
monitors"): rank 0 sends headers, then a shutdown, and must send no header after it.

``lockstep check examples/shutdown_monitor.py`` HOLDS; ``--variant late-header`` sends one more header
after the shutdown.  The worker takes it as another shutdown, so the run still ends cleanly: no
deadlock, nothing stranded, and only the monitor notices (verdict LATE_HEADER).
"""
from lockstep.spec.fabric import Group, broadcast
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.monitor import Monitor
from lockstep.spec.registry import SpecInfo, Variant

HDR = ("int64", (1,))
SHUTDOWN, INFER = 0, 1

# after the event shutdown_sent, no event header_sent: a two-state machine, "before" and "after"
NO_HEADER_AFTER_SHUTDOWN = Monitor.never_after("no_header_after_shutdown", "LATE_HEADER",
                                               first="shutdown_sent", then="header_sent")


def build(params, variant, backend):
    leader = Role("leader", "IDLE", {"sent": 0})
    leader.op("send_header", "IDLE", "IDLE", lambda c: broadcast("world", 0, HDR, INFER),
              guard=lambda c: c.v.sent < 2, do=lambda c: c.set(sent=c.v.sent + 1), event="header_sent")
    leader.op("shutdown", "IDLE", "CLOSED", lambda c: broadcast("world", 0, HDR, SHUTDOWN),
              guard=lambda c: c.v.sent >= 2, event="shutdown_sent")
    if variant == "late-header":
        leader.op("late_header", "CLOSED", DONE, lambda c: broadcast("world", 0, HDR, SHUTDOWN), event="header_sent")
    else:
        leader.local("close", "CLOSED", DONE)
    worker = Role("worker", "WAIT", {"stops": 0})

    def on_header(c, action):
        if action == SHUTDOWN:
            c.set(stops=c.v.stops + 1)
            if variant != "late-header" or c.v.stops == 2:
                c.goto(DONE)
    worker.op("recv_header", "WAIT", ("WAIT", DONE), lambda c: broadcast("world", 0, HDR), after=on_header,
              event="header_recv")
    return Protocol("shutdown-monitor", groups={"world": Group("world", (0, 1))}, backend=backend,
                    actors=[ActorDef(0, "main", leader), ActorDef(1, "main", worker)],
                    monitors=[NO_HEADER_AFTER_SHUTDOWN])


SPEC = SpecInfo(name="shutdown-monitor", description="no header after the shutdown, as a monitor", params={}, build=build,
                variants={"late-header": Variant("one more header after the shutdown", ("LATE_HEADER",))})
