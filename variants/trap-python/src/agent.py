"""A genome for the `trap` suite (host/src/tasks/trap.rs).

`GENOME` is two blocks of three bits. `solve` answers a task `block 1`
with that block's bits (`"100"`) and `all` with every block; each answer's
notes report how many ones each block holds (`descriptor: ones-0=0.333`),
which the host's search may use as a MAP-Elites descriptor
(`reported:ones-0`); the notes are never scored.

`improve` explores by rule: it picks a block and, with even odds, sets one
of its zero bits or clears one of its one bits (any bit when there is none
of that kind). Its choices come from a small seeded generator (FNV-1a of
the genome and the steps left), so the same parent at the same point of a
run always proposes the same child, and a run is reproducible from its
seed. The rule does not read the scores: whether a child is worth
expanding is the search's business, which is what the suite measures.
"""

import vivarium
from vivarium import Err, source, types

# Two blocks of three bits; `improve` rewrites this line.
GENOME = "100 100"

# The file `improve` edits (relative to the variant's tree).
SELF_PATH = "src/agent.py"


def blocks():
    return GENOME.split()


def report():
    """The notes of every answer: each block's fraction of ones."""
    return "\n".join(
        f"descriptor: ones-{i}={b.count('1') / len(b):.4f}" for i, b in enumerate(blocks())
    )


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task: types.Task) -> types.Answer:
        words = task.input.split()
        if words == ["all"]:
            return types.Answer(" ".join(blocks()), report())
        if len(words) == 2 and words[0] == "block" and words[1].isdigit():
            i = int(words[1])
            if i < len(blocks()):
                return types.Answer(blocks()[i], report())
        raise Err(f"expected `block <n>` (n below {len(blocks())}) or `all`")


class Rng:
    """FNV-1a over a string, then a 64-bit xorshift: tiny and deterministic."""

    def __init__(self, text):
        h = 0xCBF29CE484222325
        for b in text.encode("utf-8"):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        self.state = h or 1

    def below(self, n):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        self.state = x
        return x % n


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx: types.ImproveContext) -> types.Proposal:
        text = source.text(ctx, SELF_PATH)
        genome = source.const_value(text, "GENOME").strip('"').split()
        if not genome or any(set(b) - {"0", "1"} for b in genome):
            raise Err(f"GENOME is not blocks of bits: {genome!r}")
        rng = Rng(f"{' '.join(genome)}|{ctx.iterations_left}")
        b = rng.below(len(genome))
        bits = list(genome[b])
        want = "0" if rng.below(2) == 0 else "1"
        eligible = [i for i, c in enumerate(bits) if c == want] or list(range(len(bits)))
        i = eligible[rng.below(len(eligible))]
        bits[i] = "1" if bits[i] == "0" else "0"
        genome[b] = "".join(bits)
        child = " ".join(genome)
        text = source.set_const(text, "GENOME", f'"{child}"')
        vivarium.log.info(f"trap: block {b} bit {i} -> {child}")
        return source.proposal(f"trap: flip block {b} bit {i} ({child})", [source.write(SELF_PATH, text)])
