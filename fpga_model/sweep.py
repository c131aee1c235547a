"""The design space: tokens/s and tokens/J over cores x off-chip bandwidth (batch 1)."""
from typing import NamedTuple

from .cycles import token_account


class SweepPoint(NamedTuple):
    cores: int
    bandwidth_gbs: float
    tokens_per_s: float
    tokens_per_j: float
    power_w: float
    memory_bound_share: float   # fraction of the token's time in memory-bound operators


def sweep(config, params, cores, bandwidths):
    """config: HGRNBitConfig, params: FPGAParams, cores: [int], bandwidths: [GB/s]
    -> [SweepPoint], cores varying fastest."""
    if not cores or not bandwidths:
        raise ValueError("sweep needs at least one core count and one bandwidth")
    points = []
    for bw in bandwidths:
        for n in cores:
            acct = token_account(config, params.replace(cores=n, offchip_bandwidth_gbs=bw))
            mem = sum(a.seconds for a in acct.ops if a.bound == "memory") / acct.seconds
            points.append(SweepPoint(n, bw, acct.tokens_per_s, acct.tokens_per_j, acct.power_w,
                                     mem))
    return points
