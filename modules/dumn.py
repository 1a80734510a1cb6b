"""DUMN, the Denoising User-aware Memory Network (``../shared/papers/DUMN.md``): implicit feedback (clicks,
shown-not-clicked "unclicks") purified by explicit feedback (likes, dislikes), and long-term interests kept in
user-aware memories.

Per feedback sequence k in {c (click), u (unclick), l (like), d (dislike)}, behaviours e_k [B, T, E]:

    FP   head_h = softmax(e_k,h W^Q_k,h (e_k,h W^K_k,h)^T / sqrt(T)) e_k,h W^V_k,h           (Eq. 1)
         O_k = Concat_h(head_h) W^F_k                                                       (Eq. 2)
         a_j = ReLU([e_user, e_item, o_k^j] W_k),  f_k = sum_j softmax_j(a_j) o_k^j            (Eq. 3-5)
         f_c^o = f_c - project(f_c, f_d),  f_u^o = f_u - project(f_u, f_l)                    (Eq. 6-7)
    UMN  read:  k = key(FFN([f_k^o, e_user])),  w^r_j = softmax_j cos(k, M_k(j)),  r_k = sum_j w^r_j M_k(j)   (Eq. 8-11)
         write: M_k <- (1 - w^w (x) erase) (.) M_k + w^w (x) add                              (Eq. 12)
    PAIR U_k = [f_k^o * sigmoid(f_k^o W_1,k), r_k * sigmoid(r_k W_2,k)],  R = [U_c, U_u, U_l, U_d]   (Eq. 13-14)
    out  R (the tower reads [R, e_user, e_item]: Eq. 15)
    loss triplet per memory: max(d(q_k, s_k+) - d(q_k, s_k-) + margin, 0),  q_k = sum_j w^w_j M_k(j),
         d = 1 - cos; positives / negatives: the pairs <c, u>, <u, c>, <l, d>, <d, l>          (Eq. 16-20)

e_k,h is the h-th slice (E / H wide) of the behaviours (Eq. 1 splits the input, not a projection), so each
head has its own W^Q, W^K, W^V of E/H x E/H. Choices the paper leaves open (ours):

- Eq. 1's scale is 1 / sqrt(T) as printed, T = ``seq_len`` (the configured ``max_len``, not the batch's
  padded length, so that padding cannot change a result).
- ``residual`` (default off, the paper's Eq. 2): ``o_j = e_j + MHSA(e)_j``. As printed, Eq. 1-2 have no
  residual, and with T = 100 the scale 1 / sqrt(T) keeps the attention near uniform, so every o_j is the
  sequence's mean: measured on the feedback data after a full epoch, cos(o_j, mean_j o_j) = 0.99998, and the
  pooling of Eq. 3-5, whatever its scores, can only return that mean (DUMN then trails DIN by 0.11 AUC). The
  residual keeps each behaviour in its own position (configs/feedback/dumn.yaml turns it on; docs/results/
  dumn.md).
- ``scoring``: ``linear`` is Eq. 3 as printed, a linear score of [e_user, e_item, o_j] then ReLU, in which the
  target only adds the same amount to every position's score (it reaches the weights through the ReLU alone);
  ``activation_unit`` scores o_j with DIN's unit against the target (``target_attention.py``).
- The memories are persistent buffers [S, m, Z] (cross-batch state, ``tinrec/state.py``: the ranks' copies
  averaged after every step, saved in checkpoints), started uniform in +-0.1 (a zero slot has no cosine). One
  controller per sequence: an FFN (``controller_hidden``, ReLU) then linear heads for the read key, the write
  key, the erase vector (sigmoid) and the add vector (tanh), NTM's forms. The write's addressing is the read's
  form (Eq. 9-10) with its own key.
- ``key_strength`` (default None: off, Eq. 9 as printed): NTM's key strength, w_j = softmax_j(beta cos(k, M_j))
  with beta = 1 + softplus(.) from the controller, one for the read key and one for the write key; the number
  given (> 1) is beta's value at the start (the two heads' bias; 1 + ln 2 is a zero bias). As printed the
  weights are a softmax of cosines in [-1, 1] over m = 256 slots, at most e^2 apart: the trained memory's
  read weights ended uniform (entropy 1.000 of log m), every slot written alike, and the read the same vector
  for every sample (replacing it by its batch mean left test AUC unchanged; docs/results/dumn.md).
- Order in training: read from the memory as it is, then write this batch's update; the state becomes the
  written memory (detached). A batch writes the mean of its samples' single-sample updates,
  ``M <- (1 - mean_b E_b) (.) M + mean_b A_b`` (one update, no loop over the batch). Evaluation only reads.
  Gradients reach the read key through the read; the write key, erase and add vectors through the triplet
  loss, whose anchor ``q_k`` is taken from the written memory (its stated purpose: that what is written
  expresses the preference).
- Triplet samples: the valid behaviours of the batch's positive / negative sequences (the kept ones, not the
  user's whole log), projected from E to Z by a linear map per memory; ``hardest`` takes, per anchor, the
  positive farthest from it and the negative closest to it (cosine); ``random`` one of each at random. An
  anchor whose pool is empty adds 0. ``margin`` 0.2. The loss is returned as the named loss ``triplet``.
- ``project(a, b)`` with |b| = 0 (no dislike, no like) is 0: nothing to purify against.
- Ablations (DUMN's Tables 2, 4, 5, 6) by constructor arguments: ``purify=False`` (-FP), ``memories`` "four",
  "one" (UMN1: every controller reads and writes one memory), "none" (-UMN: U_k has only its short-term half),
  ``fusion`` "gate" (Eq. 13), "concat", "cross" ([f + Pr, f - Pr, f * Pr], Pr = r mapped to E), "ffn" (a ReLU
  layer on each, then concat), "attention" (softmax over {f, Pr} of a learned score, their weighted sum),
  ``triplet`` "hardest", "random", "none"; ``feedback`` the sequences read (["click", "unclick"]: implicit
  only, IF; all feedback in one time-ordered sequence, AF: ["click"] bound to the whole history with
  ``purify=False``).
"""
# Shape legend: B batch, L behaviours (padded), E behaviour width, U user width, I target width, H heads,
# S memories, M slots, Z slot width, N pool of behaviours.
import math
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import seqdot
from .masking import masked_softmax, zero_padding
from .target_attention import ActivationUnitAttention

FEEDBACK = ("click", "unclick", "like", "dislike")
PARTNER = {"click": "dislike", "unclick": "like"}  # Eq. 6-7: purified against
CONTRAST = {"click": "unclick", "unclick": "click", "like": "dislike", "dislike": "like"}  # Eq. 17: negatives
Fusion = Literal["gate", "concat", "cross", "ffn", "attention"]


def project(a_BE: Tensor, b_BE: Tensor, eps: float = 1e-12) -> Tensor:
    """Eq. 6: the projection of a onto b, ``(a . b / |b|) b / |b|``; 0 where b is 0."""
    nb2 = (b_BE * b_BE).sum(-1, keepdim=True)
    return torch.where(nb2 > eps, (a_BE * b_BE).sum(-1, keepdim=True) / nb2.clamp_min(eps) * b_BE,
                       torch.zeros_like(a_BE))


def cosine(a_BZ: Tensor, m_MZ: Tensor, eps: float = 1e-8) -> Tensor:
    """[B, M]: cos(a_b, m_j) of each row's key and every shared slot (one matrix product: never an expanded
    [B, M, Z] copy, whose backward would sum B copies of a pool of thousands of behaviours)."""
    num_BM = a_BZ @ m_MZ.t()
    return num_BM / (a_BZ.norm(dim=-1, keepdim=True) * m_MZ.norm(dim=-1).clamp_min(eps)).clamp_min(eps)


class InteractionAttention(nn.Module):
    """Eq. 1-5 for one feedback sequence: head-sliced self-attention, then a user- and target-aware pooling."""

    def __init__(self, *, dim: int, heads: int, seq_len: int, user_dim: int, item_dim: int,
                 scoring: str = "linear", residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.heads, self.width, self.scale = heads, dim // heads, 1.0 / math.sqrt(seq_len)
        self.scoring = scoring
        w = self.width
        self.wq, self.wk, self.wv = (nn.Parameter(torch.empty(heads, w, w)) for _ in range(3))
        for p in (self.wq, self.wk, self.wv):
            nn.init.uniform_(p, -1 / math.sqrt(w), 1 / math.sqrt(w))
        self.wf = nn.Linear(dim, dim, bias=False)  # W^F
        if scoring == "linear":
            self.score = nn.Linear(user_dim + item_dim + dim, 1, bias=False)  # W_k of Eq. 3
        else:  # DIN's activation unit with the target as query (needs item_dim == dim)
            self.unit = ActivationUnitAttention(dim=dim)

    def outputs(self, seq_BLE: Tensor, mask_BL: Tensor) -> Tensor:
        """O [B, L, E] of Eq. 1-2 (plus the input with ``residual``)."""
        B, L, E = seq_BLE.shape
        x_BHLw = zero_padding(seq_BLE, mask_BL).view(B, L, self.heads, self.width).transpose(1, 2)
        q, k, v = (torch.einsum("bhlw,hwv->bhlv", x_BHLw, w) for w in (self.wq, self.wk, self.wv))
        logits_BHLL = torch.einsum("bhlv,bhmv->bhlm", q, k) * self.scale
        att = masked_softmax(logits_BHLL.reshape(-1, L), mask_BL.repeat_interleave(self.heads * L, 0))
        heads_BHLw = torch.einsum("bhlm,bhmv->bhlv", att.view(B, self.heads, L, L), v)
        o_BLE = self.wf(heads_BHLw.transpose(1, 2).reshape(B, L, E))
        if self.residual:  # o_j = e_j + MHSA(e)_j: each position keeps its own behaviour
            o_BLE = o_BLE + seq_BLE
        return o_BLE

    def forward(self, seq_BLE: Tensor, mask_BL: Tensor, user_BU: Tensor, item_BI: Tensor) -> Tensor:
        """f [B, E] of Eq. 3-5."""
        B, L, _ = seq_BLE.shape
        o_BLE = self.outputs(seq_BLE, mask_BL)
        if self.scoring == "linear":
            ctx_BLX = torch.cat([user_BU, item_BI], -1).unsqueeze(1).expand(B, L, -1)
            a_BL = F.relu(self.score(torch.cat([ctx_BLX, o_BLE], -1))).squeeze(-1)
            w_BL = masked_softmax(a_BL, mask_BL)
        else:
            w_BL = self.unit.weights(zero_padding(o_BLE, mask_BL), mask_BL, item_BI, None)
        return seqdot.weighted_sum(w_BL, zero_padding(o_BLE, mask_BL))


class DUMN(nn.Module):
    """DUMN's feature purification, user memory network and PAIR fusion; the final FFN is the tower.

    Args:
        dim: E, width of the behaviours (every feedback sequence); user_dim: U; item_dim: I (the target).
        seq_len: T, the sequences' configured max_len (Eq. 1's scale).
        heads: H of Eq. 1 (must divide E).
        slots, slot_dim: m and Z of each memory (256, 64); controller_hidden: the controller FFN (512).
        feedback: the sequences read, in ``FEEDBACK``'s names (all four: DUMN).
        purify, memories, fusion, triplet, margin: see the module docstring (ablations).
        key_strength: NTM's key strength in the memories' addressing, its initial value (module docstring; our
            option); None: off.

    Attributes:
        output_dim: R's width.
    """

    def __init__(self, *, dim: int, user_dim: int, item_dim: int, seq_len: int = 100, heads: int = 2,
                 slots: int = 256, slot_dim: int = 64, controller_hidden: int = 512,
                 feedback: Sequence[str] = FEEDBACK, purify: bool = True,
                 memories: Literal["four", "one", "none"] = "four", fusion: Fusion = "gate",
                 triplet: Literal["hardest", "random", "none"] = "hardest", margin: float = 0.2,
                 scoring: Literal["linear", "activation_unit"] = "linear", residual: bool = False,
                 key_strength: Optional[float] = None) -> None:
        super().__init__()
        feedback = list(feedback)
        if not feedback or set(feedback) - set(FEEDBACK) or len(set(feedback)) != len(feedback):
            raise ValueError(f"DUMN: feedback must be distinct names of {FEEDBACK}, got {feedback}")
        if dim <= 0 or dim % heads:
            raise ValueError(f"DUMN: heads={heads} must divide dim={dim}")
        if memories not in ("four", "one", "none") or fusion not in ("gate", "concat", "cross", "ffn", "attention") \
                or triplet not in ("hardest", "random", "none"):
            raise ValueError(f"DUMN: memories four/one/none, fusion gate/concat/cross/ffn/attention, triplet "
                             f"hardest/random/none; got {memories}, {fusion}, {triplet}")
        if scoring not in ("linear", "activation_unit") or (scoring == "activation_unit" and item_dim != dim):
            raise ValueError(f"DUMN: scoring linear (Eq. 3) or activation_unit (needs item_dim == dim), got "
                             f"{scoring!r} with item_dim {item_dim}, dim {dim}")
        if memories == "none" and (fusion != "gate" or triplet != "none"):
            raise ValueError("DUMN(memories='none') has no long-term half: fusion must be gate (U_k = f_k^o gated) "
                             "and triplet none")
        if key_strength is not None and not (isinstance(key_strength, (int, float)) and not isinstance(
                key_strength, bool) and key_strength > 1):
            raise ValueError(f"DUMN: key_strength is the key strength's initial value, a number > 1 (or null: "
                             f"off), got {key_strength!r}")
        self.feedback, self.purify, self.memories, self.fusion = feedback, purify, memories, fusion
        self.triplet, self.margin, self.dim, self.slot_dim = triplet, float(margin), dim, slot_dim
        self.key_strength = key_strength is not None
        self.fp = nn.ModuleDict({k: InteractionAttention(dim=dim, heads=heads, seq_len=seq_len, user_dim=user_dim,
                                                         item_dim=item_dim, scoring=scoring, residual=residual)
                                 for k in feedback})
        Z = slot_dim
        # the memories are cross-batch state (tinrec/state.py): averaged over the ranks, saved in checkpoints
        self.cross_batch_state = {} if memories == "none" else {"memory_SMZ": "mean"}
        if memories != "none":
            S = len(feedback) if memories == "four" else 1
            self.register_buffer("memory_SMZ", torch.empty(S, slots, Z).uniform_(-0.1, 0.1), persistent=True)
            self.controllers = nn.ModuleDict({k: nn.Sequential(nn.Linear(dim + user_dim, controller_hidden),
                                                                nn.ReLU(),
                                                                nn.Linear(controller_hidden, 4 * Z + 2 * self.key_strength))
                                              for k in feedback})
            if key_strength is not None:  # beta = 1 + softplus(b) = key_strength at the start
                with torch.no_grad():
                    for c in self.controllers.values():
                        c[-1].bias[4 * Z:] = math.log(math.expm1(key_strength - 1))
            self.sample_proj = nn.ModuleDict({k: nn.Linear(dim, Z, bias=False) for k in feedback})
        self.gate_f = nn.ModuleDict({k: nn.Linear(dim, dim, bias=False) for k in feedback})  # W_1
        width = dim
        if memories != "none":
            if fusion == "gate":
                self.gate_r = nn.ModuleDict({k: nn.Linear(Z, Z, bias=False) for k in feedback})  # W_2
                width = dim + Z
            elif fusion == "concat":
                width = dim + Z
            elif fusion == "cross":
                self.to_e = nn.ModuleDict({k: nn.Linear(Z, dim, bias=False) for k in feedback})
                width = 3 * dim
            elif fusion == "ffn":
                self.ffn_f = nn.ModuleDict({k: nn.Linear(dim, dim) for k in feedback})
                self.ffn_r = nn.ModuleDict({k: nn.Linear(Z, Z) for k in feedback})
                width = dim + Z
            else:  # attention
                self.to_e = nn.ModuleDict({k: nn.Linear(Z, dim, bias=False) for k in feedback})
                self.att = nn.ModuleDict({k: nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))
                                          for k in feedback})
                width = dim
        self.output_dim: int = len(feedback) * width

    # ---- memory ------------------------------------------------------------------------------------------
    def _slot(self, k: str) -> int:
        return self.feedback.index(k) if self.memories == "four" else 0

    def controller(self, k: str, f_BE: Tensor, user_BU: Tensor
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """Read key, write key [B, Z], erase in (0, 1), add in (-1, 1) [B, Z] (Eq. 8, 12); with
        ``key_strength``, the read and write keys' strengths beta >= 1 [B] (NTM's), else None."""
        out = self.controllers[k](torch.cat([f_BE, user_BU], -1))
        read, write, erase, add = out[:, : 4 * self.slot_dim].chunk(4, dim=-1)
        beta_r = beta_w = None
        if self.key_strength:
            beta_r, beta_w = (1 + F.softplus(out[:, 4 * self.slot_dim + i]) for i in range(2))
        return read, write, torch.sigmoid(erase), torch.tanh(add), beta_r, beta_w

    def read(self, key_BZ: Tensor, memory_MZ: Tensor, beta_B: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Eq. 9-11: (weights [B, M], r [B, Z]); ``beta_B`` scales the cosines first (NTM's key strength)."""
        cos_BM = cosine(key_BZ, memory_MZ)
        w_BM = torch.softmax(cos_BM if beta_B is None else beta_B[:, None] * cos_BM, dim=-1)
        return w_BM, w_BM @ memory_MZ

    @staticmethod
    def write(memory_MZ: Tensor, w_BM: Tensor, erase_BZ: Tensor, add_BZ: Tensor) -> Tensor:
        """Eq. 12 for a batch: the mean of the single-sample updates, (1 - mean_b E_b) (.) M + mean_b A_b."""
        B = w_BM.shape[0]
        erase_MZ = w_BM.t() @ erase_BZ / B  # mean_b w_b (x) erase_b
        add_MZ = w_BM.t() @ add_BZ / B
        return (1 - erase_MZ) * memory_MZ + add_MZ

    def triplet_loss(self, q_BZ: Tensor, pos_NZ: Tensor, neg_NZ: Tensor) -> Tensor:
        """Eq. 17 averaged over the anchors, with the hardest (or random) positive and negative of the pools."""
        if pos_NZ.shape[0] == 0 or neg_NZ.shape[0] == 0:
            return q_BZ.sum() * 0.0
        d_pos_BN = 1 - cosine(q_BZ, pos_NZ)
        d_neg_BN = 1 - cosine(q_BZ, neg_NZ)
        if self.triplet == "hardest":
            d_pos_B, d_neg_B = d_pos_BN.max(-1).values, d_neg_BN.min(-1).values
        else:
            B = q_BZ.shape[0]
            ip = torch.randint(pos_NZ.shape[0], (B,), device=q_BZ.device)
            ineg = torch.randint(neg_NZ.shape[0], (B,), device=q_BZ.device)
            d_pos_B, d_neg_B = d_pos_BN.gather(1, ip[:, None])[:, 0], d_neg_BN.gather(1, ineg[:, None])[:, 0]
        return F.relu(d_pos_B - d_neg_B + self.margin).mean()

    # ---- fusion ------------------------------------------------------------------------------------------
    def fuse(self, k: str, f_BE: Tensor, r_BZ: Optional[Tensor]) -> Tensor:
        short = f_BE * torch.sigmoid(self.gate_f[k](f_BE))
        if r_BZ is None:
            return short
        if self.fusion == "gate":  # Eq. 13
            return torch.cat([short, r_BZ * torch.sigmoid(self.gate_r[k](r_BZ))], -1)
        if self.fusion == "concat":
            return torch.cat([f_BE, r_BZ], -1)
        if self.fusion == "ffn":
            return torch.cat([F.relu(self.ffn_f[k](f_BE)), F.relu(self.ffn_r[k](r_BZ))], -1)
        pr_BE = self.to_e[k](r_BZ)
        if self.fusion == "cross":
            return torch.cat([f_BE + pr_BE, f_BE - pr_BE, f_BE * pr_BE], -1)
        both_B2E = torch.stack([f_BE, pr_BE], 1)
        a_B21 = torch.softmax(self.att[k](both_B2E), dim=1)
        return (a_B21 * both_B2E).sum(1)

    def forward(self, *, click_BLE: Tensor, click_mask_BL: Tensor, user_BU: Tensor, item_BI: Tensor,
                unclick_BLE: Optional[Tensor] = None, unclick_mask_BL: Optional[Tensor] = None,
                like_BLE: Optional[Tensor] = None, like_mask_BL: Optional[Tensor] = None,
                dislike_BLE: Optional[Tensor] = None, dislike_mask_BL: Optional[Tensor] = None
                ) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        """R [B, output_dim]; in training with a triplet loss, also ``{"triplet": L2}``."""
        given = {"click": (click_BLE, click_mask_BL), "unclick": (unclick_BLE, unclick_mask_BL),
                 "like": (like_BLE, like_mask_BL), "dislike": (dislike_BLE, dislike_mask_BL)}
        for k, (s, m) in given.items():
            if (s is None or m is None) == (k in self.feedback):
                raise ValueError(f"DUMN(feedback={self.feedback}): bind {k}_BLE and {k}_mask_BL exactly when "
                                 f"{k!r} is read")
        seqs = {k: given[k] for k in self.feedback}
        f = {k: self.fp[k](s, m, user_BU, item_BI) for k, (s, m) in seqs.items()}  # Eq. 1-5
        if self.purify:  # Eq. 6-7
            f = {k: (v - project(v, f[PARTNER[k]]) if PARTNER.get(k) in f else v) for k, v in f.items()}
        losses: List[Tensor] = []
        parts = []
        # the memory as this batch finds it; a copy, so that the update below leaves what backward needs intact
        state = None if self.memories == "none" else self.memory_SMZ.detach().clone()
        new_state = None if state is None else state.clone()
        writes: Dict[int, List[Tensor]] = {}
        for k in self.feedback:
            r = None
            if state is not None:
                s = self._slot(k)
                rkey, wkey, erase, add, beta_r, beta_w = self.controller(k, f[k], user_BU)
                _, r = self.read(rkey, state[s], beta_r)
                if self.training:
                    w_BM, _ = self.read(wkey, state[s], beta_w)
                    written = self.write(state[s], w_BM, erase, add)
                    writes.setdefault(s, []).append(written)
                    if self.triplet != "none" and CONTRAST[k] in seqs:
                        q_BZ = w_BM @ written
                        (ps, pm), (ns, nm) = seqs[k], seqs[CONTRAST[k]]
                        proj = self.sample_proj[k]
                        losses.append(self.triplet_loss(q_BZ, proj(ps[pm]), proj(ns[nm])))
            parts.append(self.fuse(k, f[k], r))
        if self.training and writes:
            with torch.no_grad():
                for s, ws in writes.items():  # one memory written by several controllers (UMN1): their mean
                    new_state[s] = torch.stack([w.detach() for w in ws]).mean(0)
                self.memory_SMZ.copy_(new_state)
        out_BO = torch.cat(parts, -1)
        if self.training and losses:
            return out_BO, {"triplet": sum(losses)}
        return out_BO
