"""The models the benchmark measures: adding one is one entry of :data:`MODELS`.

Every entry is a config of ``configs/`` plus the overrides that give each behaviour field (item, category)
the benchmark's embedding width (``{dim}``, 64 by default) and size what depends on it: the temporal tables
(TIN's position table, BST's order table) to the behaviour width 2 * dim, DIEN's GRU to the behaviour width
(as the peers do). ``peers`` lists the same model in the peer libraries (``benchmarks/peers.py``);
``lookup_bound`` marks the models whose cost at long L is dominated by embedding traffic, for which the
memory-bandwidth floor is reported; ``quadratic`` the ones whose cost grows with L^2 (self-attention).
``+compile`` entries are the same model with ``model.compile=true`` (torch.compile of the interest module;
its compilation falls in the warm-up steps). ``num_categories`` replaces the synthetic batch's 1000 categories
for one entry: SIM hard searches the target's category on ids in the loader (``configs/sim_hard.yaml``), and
with 1000 categories only about 2 of 2000 behaviours match; with 20 about 100 do, so its k = 100 slots are full
at L = 2000 (its costly case; the result records the kept behaviours per sample). ``extra_features`` adds id
families to the synthetic dataset (``hetero``: 200 fields) and sizes every table of the entry's config from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class Entry:
    config: str
    overrides: Tuple[str, ...] = ()
    peers: Tuple[Tuple[str, str], ...] = ()  # (peer library, its model name)
    lookup_bound: bool = False
    quadratic: bool = False
    num_categories: Optional[int] = None  # the synthetic batch's categories for this entry (default 1000)
    # id families the synthetic dataset adds ({"user": 100, ...}: columns user_f000.. with ids in 1..rows - 1) and
    # with them: every table of the config sized by that dataset (rows: auto), the config's own widths kept
    extra_features: Optional[Tuple[Tuple[str, int], ...]] = None

    def resolved(self, dim: int) -> List[str]:
        if self.extra_features:  # a field-stack backbone: its widths are the config's, not the benchmark's
            return [o.format(dim=dim, width=2 * dim) for o in self.overrides]
        fields = [f"model.embeddings.main.item.dim={dim}", f"model.embeddings.main.category.dim={dim}"]
        return fields + [o.format(dim=dim, width=2 * dim) for o in self.overrides]


MODELS = {
    "tin": Entry("configs/default.yaml", ("model.embeddings.temporal.position.dim={width}",), lookup_bound=True),
    "tin+compile": Entry("configs/default.yaml", ("model.embeddings.temporal.position.dim={width}", "model.compile=true"),
                         lookup_bound=True),
    "din": Entry("configs/din.yaml", peers=(("deepctr", "din"), ("rechub", "din")), lookup_bound=True),
    "din+compile": Entry("configs/din.yaml", ("model.compile=true",), lookup_bound=True),
    "bst": Entry("configs/bst.yaml", ("model.embeddings.temporal.coe.dim={width}",), peers=(("rechub", "bst"),),
                 quadratic=True),
    "dien": Entry("configs/dien.yaml", ("model.interests.dien.hidden={width}",), peers=(("deepctr", "dien"),)),
    "avgpool": Entry("configs/avgpool_concat.yaml", lookup_bound=True),
    # the lifelong backbones (issue 14's targets are ratios to "din" at L = 2000 in the same run) and CAIN on LAP
    "sim_hard": Entry("configs/sim_hard.yaml", num_categories=20),  # looks up the kept rows only: no L-row floor
    "sim_hard_after_lookup": Entry("configs/sim_hard_after_lookup.yaml", lookup_bound=True, num_categories=20),
    "sim_soft": Entry("configs/sim_soft.yaml", lookup_bound=True),
    "eta": Entry("configs/eta.yaml", lookup_bound=True),
    "sdim": Entry("configs/sdim.yaml", lookup_bound=True),
    # SDIM with the lifelong configs' tau (8 groups of 6 bits: few collisions, its bucket sums over rows + index)
    "sdim_tau6": Entry("configs/sdim.yaml", ("model.interests.sdim.tau=6",), lookup_bound=True),
    "twin": Entry("configs/twin.yaml", lookup_bound=True),
    "lap": Entry("configs/lap.yaml", lookup_bound=True),
    # the same with their sequence as a [B, L, D] tensor, not distinct rows + index (modules/indexed.py)
    "eta_tensor": Entry("configs/eta.yaml", ("model.indexed_sequences=false",), lookup_bound=True),
    "sdim_tensor": Entry("configs/sdim.yaml", ("model.indexed_sequences=false",), lookup_bound=True),
    "twin_tensor": Entry("configs/twin.yaml", ("model.indexed_sequences=false",), lookup_bound=True),
    "sim_soft_tensor": Entry("configs/sim_soft.yaml", ("model.indexed_sequences=false",), lookup_bound=True),
    "lap_tensor": Entry("configs/lap.yaml", ("model.indexed_sequences=false",), lookup_bound=True),
    "cain": Entry("configs/cain.yaml", lookup_bound=True),
    # CAIN as the lifelong experiments train it (configs/lifelong/cain.yaml's first layer: each behaviour's own
    # embedding through the centre tap, its neighbours' watch times as the context; identity start; braces
    # doubled for str.format)
    "cain_lifelong": Entry("configs/cain.yaml", (
        "model.inputs.watch={{dense: hist_watch_time}}",
        "model.interests.cain.inputs={{seq_BLD: behaviours, mask_BL: mask, query_BD: target, profile_BP: profile, "
        "side_BLF: watch}}",
        "model.interests.cain.side_dim=1", "model.interests.cain.side_relative=true",
        "model.interests.cain.content_context=false", "model.interests.cain.identity_init=true"), lookup_bound=True),
    # the heterogeneous expert backbone (issue 15): the production layout (GwPFM, FlatDNN, IPNN, DCN V2 over 203
    # id fields on three embedding sets, a TIN expert over the category sequence) on the benchmark's data
    "hetero": Entry("configs/production/hetero_experts.yaml", extra_features=(("user", 100), ("item", 60), ("ctx", 40), ("rows", 1000))),
    # trigger-induced recommendation (issue 16): DEI2N and its online baseline DMIN+TRA; the trigger is the row's
    # latest behaviour (benchmarks/tinrec_bench.py write_dataset); the interval table joins the behaviour width
    "dei2n": Entry("configs/trigger/dei2n.yaml", ("model.embeddings.main.interval.dim={dim}",
                                                  "model.interests.dei2n.time_dim={dim}")),
    "dmin_tra": Entry("configs/trigger/dmin_tra.yaml"),
}
LIFELONG = ("din", "avgpool", "sim_hard", "sim_hard_after_lookup", "sim_soft", "eta", "sdim", "twin", "lap", "cain")
"""The models of the lifelong benchmark (``python -m benchmarks.run --models <these> --lengths 200 1000 2000``)."""

TRIGGER = ("din", "dei2n", "dmin_tra")
"""The trigger benchmark (``python -m benchmarks.run --models <these> --lengths 30 200 --no-peers``)."""

LENGTHS = (50, 200, 1000, 2000)
