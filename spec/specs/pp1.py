"""PP1: rank0 outside the mesh, a leader (mesh group-rank 0) and mesh workers (docs/domain.md §3.6).

See ``pp.py`` for the protocol, the modelling choices and the faults; the KV lifecycle of every mesh
rank is the ``kv`` spec's (``kv.apply``), and FRANKEN is checked whenever the mesh ranks have applied
the same number of envelopes.
"""
from ...model.api import DEADLOCK, FRANKEN, STRANDED, WRONG_GROUP
from ..registry import SpecInfo, UsageError, Variant
from .pp import COMMON_VARIANTS, build_pp, pp_params


def build(params, variant, backend):
    if params["mesh"] < 2:
        raise UsageError(f"parameter mesh={params['mesh']}: pp1 needs a mesh of at least 2 (use pp0 for one Stage-1 rank)")
    return build_pp(params, variant, backend, mesh=params["mesh"], name="pp1")


SPEC = SpecInfo(
    name="pp1",
    description="PP1: rank0 out of mesh, leader validates then broadcasts on mesh_pg, Phase B on mesh_pg",
    params=pp_params(2),
    variants={
        **COMMON_VARIANTS,
        "om07-leader-throws": Variant("the leader starts the mesh broadcast before validating, then rejects and exits",
                                      (STRANDED,), params={"faults": "reject@leader"}, backend="nccl"),
        "om08-wrong-group": Variant("one Phase-B all_reduce on world_pg instead of mesh_pg", (WRONG_GROUP, DEADLOCK)),
        "om10-missing-override": Variant("recompute planned without context frames; the mesh falls back to local state",
                                         (FRANKEN,), params={"faults": "missing-override"}),
        "reset-drift": Variant("an out-of-band cache reset on one mesh rank", (FRANKEN,), params={"faults": "none"}),
        "start-frame-drift": Variant("one mesh rank advances current_start_frame itself and misses the hard cut", (FRANKEN,),
                                     params={"faults": "none"}),
        "nonmember-skips-new-group": Variant("rank0, outside mesh_pg, skips its new_group call", (DEADLOCK,)),
    },
    build=build,
)
