"""The mining report's README text (mining.report writes it): what was run, the verdicts, the members,
the distances against their controls and the parameter counts, all from the summary's numbers."""
from __future__ import annotations

import math

import numpy as np

from .report import CHANCE_STDS, CLIFF_WINDOW, DISTANCE_CLAIM, SEPARATION_FACTOR, SIDES, SIGNAL_P, _f, nanmean


def _pct(x) -> str:
    # 3 significant digits: a 4-step run changes the loss by thousandths of a percent, which must not read 0.00%
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.3g}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def readme(s: dict, image_prefix: str = "") -> str:
    """The report's README, all from the summary's numbers."""
    lines = ["# Mining run report", ""]
    lines += _readme_run(s) + [""] + _readme_verdicts(s) + [""] + _readme_members(s) + [""]
    lines += _readme_distances(s) + [""] + _readme_controls(s) + [""] + _readme_parameters(s) + [""]
    lines += ["## Plots", ""]
    for name, caption in (("spectra", "spectra per layer, d′ and the largest gap"), ("distances", "distance heatmaps"),
                          ("layers", "distances per layer"), ("members", "member-to-member similarity"),
                          ("weights", "IRLS weights"), ("losses", "members' losses")):
        lines += [f"![{caption}]({image_prefix}{name}.png)", ""]
    lines += ["All numbers, per layer and per pair: `summary.json` (report folder); the raw per-layer data: "
              "`extract.json`.", ""]
    return "\n".join(lines)


def _readme_run(s: dict) -> list[str]:
    r = s["run"]
    sizes = ", ".join(f"{c} {n}" for c, n in r["cluster_sizes"].items())
    return ["## What was run", "",
            f"- base checkpoint `{r['checkpoint']}`; {r['layers']} layers (targets `{r['targets']}`)",
            f"- {r['members']} members per attribute, {r['mixed_members']} in the generic `mixed` cluster "
            f"(extracted: {sizes})",
            f"- each member: LoRA rank {r['rank']} (alpha {r['lora_alpha']}), {r['steps']} steps, batch "
            f"{r['batch_size']}, lr {r['lr']}, {r['frames']} frames at {r['resolution']} px",
            f"- extraction: d′ = {r['subspace_rank']} (gap search within {list(r['rank_bounds'])}), IRLS α = {r['alpha']}"]


def _readme_verdicts(s: dict) -> list[str]:
    v = s["verdicts"]
    c, d, cm = v["cliff"], v["distances"], v["common"]
    lines = ["## Do the paper's claims hold here?", ""]
    head = "holds" if c["holds"] else "does not hold here"
    if c["holds"] and not c["informative"]:
        head = "holds by the count, but the test is not informative here"
    if not c["spectra"]:
        head = "cannot be judged (no usable spectra)"
    cliff = (f"**(a) A cliff near d′: {head}.** In {c['hits']} of "
             f"{c['spectra']} layer × attribute spectra the largest gap σⱼ/σⱼ₊₁ within the bounds sits within "
             f"±{CLIFF_WINDOW} of d′ (rule: at least half).")
    if c["spectra"] and not c["informative"]:
        cliff += (f" This test cannot tell here: a position drawn at random from the allowed ones would land "
                  f"that close {_f(100 * c['chance_hit_rate'], '.0f')}% of the time (the spectra are short or the "
                  "bounds narrow), so the count says nothing about a cliff.")
    if c["rank_auto"]:
        cliff += (" d′ was itself chosen at the largest gap of the plain mean's spectrum (`subspace_rank = auto`), "
                  "so hits are likely by construction.")
    ratio = [f"{a} {_f(s['cliff'][a]['median_ratio_at_d'], '.3g')} "
             f"(all consecutive ratios: {_f(s['cliff'][a]['median_ratio_all'], '.3g')})"
             for a in s["attributes"] if a in s["cliff"]]
    cliff += " Median σ_d′/σ_d′+1 per attribute: " + "; ".join(ratio) + "."
    lines += [cliff, ""]

    dist = (f"**(b) Pairwise distances mostly above {DISTANCE_CLAIM}: "
            f"{'holds' if d['holds'] else 'does not hold here'}.** {d['above']} of {d['pairs']} attribute pairs have a "
            f"mean column-side distance above {DISTANCE_CLAIM} ({_f(100 * d['share_above'], '.0f')}%). "
            f"Against the controls, {d['separated']} of {d['pairs']} pairs are separated (cross (halves) ≥ "
            f"{SEPARATION_FACTOR}× the mean self distance and at chance level or above, i.e. ≥ chance − "
            f"{CHANCE_STDS:g} std of a random pair).")
    if d["mostly_above"] and not d["mostly_separated"]:
        dist += (" The raw distances are high, but halves of one attribute are about as far apart as different "
                 "attributes (or the distances are near chance), so they do not show distinct attribute subspaces.")
    lines += [dist, ""]
    sep = s["separation"]["column"]["pairs"]
    rows = [[p.replace("|", " vs "), _f(x["cross_halves"]), _f(x["self_mean"]), _f(x["ratio"]), _f(x["chance"]),
             "yes" if x["separated"] else "no"] for p, x in sep.items()]
    lines += _table(["pair (column side)", "cross (halves)", "mean self", "ratio", "chance", "separated"], rows) + [""]

    common = (f"**Common subspace** (rank {s['common']['rank']}): on average "
              f"{_f(100 * cm['energy_share_column'], '.0f')}% of an attribute member's update energy (column side) "
              "lies in the subspace shared by all attributes' members.")
    if cm["separated_after"] is not None:
        change = ("does not change" if cm["separated_after"] == cm["separated_before"] else
                  "increases" if cm["separated_after"] > cm["separated_before"] else "decreases")
        common += (f" After projecting it out, {cm['separated_after']} of {d['pairs']} pairs are separated "
                   f"(before: {cm['separated_before']}): separation {change}.")
    lines += [common]
    sig = v["member_signal"]
    if np.isfinite(sig["p"]):
        lines += ["", f"**Member level** (no extraction; mean update of all attribute members removed): two members "
                      f"of one attribute have a mean centred cosine of {_f(sig['within'], '.3f')}, two of different "
                      f"attributes {_f(sig['across'], '.3f')}; permutation p = {_f(sig['p'], '.3g')}, leave-one-out "
                      f"attribute accuracy {_f(100 * sig['loo_accuracy'], '.0f')}% (chance "
                      f"{_f(100 * sig['chance_accuracy'], '.0f')}%). "
                      + ("The attributes do leave a mark on the members' updates." if sig["found"] else
                         f"At p ≥ {SIGNAL_P} the members of one attribute are no more alike than any two members.")]
    return lines


def _readme_members(s: dict) -> list[str]:
    m = s["members"]
    lines = ["## Members", "",
             f"Held-out loss went down for {m['dropped']} of {m['total']} members (median change "
             f"{_pct(m['median_relative_change'])}); training took {_f(m['train_seconds_total'], '.0f')} s in all."]
    if m["missing"]:
        lines.append(f"No member.json for {len(m['missing'])} member(s): {', '.join(m['missing'])}.")
    rows = [[r["member"], _f(r["before"], ".4f"), _f(r["after"], ".4f"), _pct(r["relative_change"]),
             _f(r["train_seconds"], ".1f")] for r in m["table"]]
    return lines + [""] + _table(["member", "held-out before", "after", "change", "train s"], rows)


def _readme_distances(s: dict) -> list[str]:
    lines = ["## Distances (mean over layers)", "",
             "Distance 1 − cos θ₁ between subspaces: 0 = share a direction, 1 = orthogonal. Off the diagonal: "
             "the full clusters' cross distance; on it: the self distance between two halves of one attribute."]
    attrs = s["attributes"]
    for side in SIDES:
        m, c = s["matrices"][side]["cross"], s["controls"][side]
        rows = [[f"**{a}**"] + [_f(v) for v in row] for a, row in zip(attrs, m)]
        lines += ["", f"{side} side ({'output' if side == 'column' else 'input'}):", ""]
        lines += _table([""] + attrs, rows)
        lines += ["", f"cross {_f(c['cross_mean'])}, self {_f(c['self_mean'])}, cross (halves) "
                      f"{_f(c['cross_halves_mean'])}, chance {_f(c['chance']['mean'])} ± {_f(c['chance']['std'])}; "
                      f"{s['separation'][side]['count']} of {s['separation'][side]['total']} pairs separated."]
        lines += ["", f"Overlap (mean cos² over all principal angles, 1 = same subspace; chance d/n = "
                      f"{_f(c['chance_overlap'], '.3f')}): self {_f(c['self_overlap'], '.3f')}, cross (halves) "
                      f"{_f(c['cross_halves_overlap'], '.3f')}."]
    return lines


def _readme_controls(s: dict) -> list[str]:
    lines = ["## Other controls", ""]
    aff = s.get("member_affinity")
    if aff:
        rows = [[m, _f(x["within"], ".3f"), _f(x["across"], ".3f"), _f(x["p"], ".3g"), _f(100 * x["loo_accuracy"], ".0f")]
                for m, x in aff["stats"].items()]
        lines += ["Member to member (mining.affinity; mean over layers; attribute members only; p from "
                  f"{aff['permutations']} label permutations; leave-one-out chance "
                  f"{_f(100 * aff['chance_accuracy'], '.0f')}%):", ""]
        lines += _table(["measure", "within attribute", "across", "p", "LOO accuracy %"], rows) + [""]
    a = s["activations"]
    if a:
        lines.append(f"- row side vs the inputs' principal subspace: mean distance {_f(a['row_to_activations_mean'])} "
                     f"(attributes' row self distance {_f(s['controls']['row']['self_mean'])}); the attributes' "
                     f"activation subspaces are {_f(a['activations_between_mean'])} apart. A row subspace close to "
                     "the activations' says more about the inputs than about the attribute.")
    else:
        lines.append("- activation control: not computed (extraction ran without it).")
    explains = s["common"]["mixed_explains"]
    if explains:
        lines.append("- share of each attribute subspace's energy the generic `mixed` subspace explains (column / "
                     "row): " + "; ".join(f"{k} {_f(v['column'])} / {_f(v['row'])}" for k, v in explains.items()))
    if s["after_removing_common"]:
        m = s["after_removing_common"]["matrices"]["column"]
        n = len(s["attributes"])
        off = [m["cross"][i][j] for i in range(n) for j in range(n) if i != j]
        lines.append(f"- after removing the common subspace: column-side mean cross {_f(nanmean(off))}, mean self "
                     f"{_f(nanmean([m['cross'][i][i] for i in range(n)]))}")
    return lines


def _readme_parameters(s: dict) -> list[str]:
    p = s["parameters"]
    lines = ["## Trainable parameters over the same layers", "",
             f"- attribute basis (Σ dA·dB, from {p['source']}): {p['basis']:,}",
             f"- LoRA at rank {s['run']['rank']}: {p['lora']:,}",
             f"- full fine-tuning of these layers: {p['full']:,}"]
    if p.get("note"):
        lines.append(f"- note: {p['note']}")
    return lines

__all__ = ["readme"]
