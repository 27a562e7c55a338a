"""The world: process-group setup (every rank, same order, explicit timeouts) and roles."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from .config import RunConfig

ROLE_TP_RANK0 = "tp_rank0"
ROLE_TP_WORKER = "tp_worker"
ROLE_STAGE0 = "stage0"          # PP rank0 (both PP0 and PP1)
ROLE_STAGE1 = "stage1"          # PP0 rank1: the whole generator, no TP
ROLE_LEADER = "mesh_leader"     # PP1 global rank 1 = mesh group-rank 0
ROLE_MESH_WORKER = "mesh_worker"


def role_of(cfg: RunConfig, rank: int) -> str:
    if cfg.topology == "tp":
        return ROLE_TP_RANK0 if rank == 0 else ROLE_TP_WORKER
    if rank == 0:
        return ROLE_STAGE0
    if cfg.topology == "pp0":
        return ROLE_STAGE1
    return ROLE_LEADER if rank == cfg.mesh_ranks[0] else ROLE_MESH_WORKER


def group_table(cfg: RunConfig) -> dict[str, list[int]]:
    """Group name -> global ranks, in creation order (the manifest records this)."""
    g = {"world": list(range(cfg.world))}
    if cfg.topology == "pp1":
        g["mesh"] = cfg.mesh_ranks
    return g


def tp_group_name(cfg: RunConfig) -> str | None:
    """The group Phase B's collectives must use (None: no TP collectives, PP0's stage 1)."""
    return {"tp": "world", "pp0": None, "pp1": "mesh"}[cfg.topology]


@dataclass
class GroupInfo:
    name: str
    pg: object | None          # the ProcessGroup handle, None on non-members
    ranks: list[int]            # global ranks
    group_rank: int | None      # this rank's group-local rank, None if not a member


@dataclass
class World:
    cfg: RunConfig
    rank: int
    world_size: int
    role: str
    device: torch.device
    groups: dict[str, GroupInfo] = field(default_factory=dict)
    local_rank: int = 0

    @property
    def mesh_rank(self) -> int:
        """Rank within the mesh (the ranks that run Phase B), -1 outside it."""
        r = self.cfg.mesh_ranks
        return r.index(self.rank) if self.rank in r else -1

    @property
    def is_mesh_member(self) -> bool:
        return self.mesh_rank >= 0


def init_world(cfg: RunConfig, rank: int, init_method: str, local_rank: int = 0) -> World:
    """init_process_group + new_group for every group, on every rank, in the same order."""
    timeout = timedelta(seconds=cfg.dist_timeout_s)
    if cfg.backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    kw = {"device_id": device} if cfg.backend == "nccl" else {}
    dist.init_process_group(cfg.backend, init_method=init_method, rank=rank, world_size=cfg.world,
                            timeout=timeout, **kw)
    w = World(cfg=cfg, rank=rank, world_size=cfg.world, role=role_of(cfg, rank), device=device,
              local_rank=local_rank)
    for name, ranks in group_table(cfg).items():
        if name == "world":
            pg = dist.group.WORLD
        else:
            # Collective over the default group: every rank calls it, members or not (rulebook 1.3.1).
            pg = dist.new_group(ranks, timeout=timeout, group_desc=name)  # Flight Recorder dumps carry the name
            if pg is dist.GroupMember.NON_GROUP_MEMBER:
                pg = None
        w.groups[name] = GroupInfo(name, pg, ranks, ranks.index(rank) if rank in ranks else None)
    if cfg.topology == "pp1" and rank == 0:
        # Rank0 never touches mesh_pg (rulebook 1.3.5): it must not even hold a handle.
        assert w.groups["mesh"].pg is None, "rank0 got a mesh_pg handle"
    return w


def env_rank_info() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when launched by torchrun, else None."""
    if all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    return None
