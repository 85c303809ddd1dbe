"""What XLA's TPU compiler says about a compiled program, read from its HLO text.

The TPU backend writes an `estimated_cycles` figure into the backend config of most
instructions it schedules (fusions, convolutions, copies). `cycle_report` sums them
over the instructions that execute (the entry computation and what it calls, loop
bodies times their trip counts), attributes each to a stage of the CREMA step by its
`op_name` metadata (jax named scopes and flax module paths), and lists the
instructions that carry no estimate (sorts, gathers, scatters, collectives, custom
calls), so a reader knows what the cycle sum leaves out. Every figure here is the
compiler's estimate for a chip it never ran on, not a measurement.
"""

from __future__ import annotations

import collections
import dataclasses
import re

_COMPUTATION = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%(?P<name>[\w.\-]+) = (?P<shape>.*?) (?P<opcode>[a-z][a-z0-9\-]*)\(")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CUSTOM_TARGET = re.compile(r'custom_call_target="([^"]+)"')
# Edges to computations that run as their own instructions (a fusion's `calls=` and a
# reducer's `to_apply=` are costed on the calling instruction).
_BODY = re.compile(r"\bbody=%?([\w.\-]+)")
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_CALL_TARGET = re.compile(r"\bto_apply=%?([\w.\-]+)")

# Instructions that move or name data without work of their own.
_FREE = frozenset({"parameter", "get-tuple-element", "tuple", "bitcast", "constant",
                   "after-all", "partition-id", "replica-id", "copy-done", "slice-done",
                   "collective-permute-done", "all-gather-done", "all-reduce-done",
                   "async-done", "opt-barrier", "add-dependency"})
# Asynchronous memory moves (HBM <-> VMEM, overlapped with compute by the scheduler).
_ASYNC_MOVES = frozenset({"copy-start", "slice-start"})
_SCALAR_BYTES = 4096  # Smaller uncosted results (scalar index arithmetic) are not listed.

# (stage, test on the op_name), first match wins. Named scopes come from
# crema_jax.step ("views", "loss", "optimizer"); module paths from flax.
STAGES = (
    ("views", lambda n: "/views/" in n or n.endswith("/views")),
    ("optimizer", lambda n: "/optimizer/" in n),
    ("attention", lambda n: "/attn/core/" in n),  # Scores, softmax, weighted values.
    ("decoder", lambda n: "forward_decoder" in n or "CREMA.targets" in n
     or "/decoder/" in n),
    ("encoder", lambda n: "forward_encoder" in n or "/encoder/" in n
     or "pool_latent" in n or "project" in n or "CREMA.embed" in n
     or "/patch_embed/" in n),
    ("loss", lambda n: "/loss/" in n),
)


def stage_of(op_name: str) -> str:
  """The step stage an instruction's op_name belongs to ("other" when none)."""
  for stage, test in STAGES:
    if test(op_name):
      return stage
  return "other"


@dataclasses.dataclass
class Instruction:
  name: str
  opcode: str
  shape: str
  cycles: int | None   # None: the compiler wrote no estimate.
  op_name: str
  line: str


def computations(hlo_text: str) -> tuple[str, dict[str, list[Instruction]]]:
  """(entry name, {computation name: its instructions})."""
  comps, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    if not line.startswith((" ", "}")):
      match = _COMPUTATION.match(line)
      if match:
        current = match.group(2)
        comps[current] = []
        entry = current if match.group(1) else entry
        continue
    if line.startswith("}"):
      current = None
      continue
    match = _INSTRUCTION.match(line) if current else None
    if match:
      cycles = _CYCLES.search(line)
      op_name = _OP_NAME.search(line)
      comps[current].append(Instruction(
          match["name"], match["opcode"], match["shape"],
          int(cycles.group(1)) if cycles else None,
          op_name.group(1) if op_name else "", line))
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  return entry, comps


def executed(hlo_text: str) -> list[tuple[Instruction, int]]:
  """Every instruction that runs as its own kernel, with how many times per call
  (loop bodies and conditions times their known trip count)."""
  entry, comps = computations(hlo_text)
  out = []

  def visit(name: str, times: int, depth: int = 0):
    if depth > 20:
      raise ValueError("HLO call graph deeper than 20")
    for inst in comps.get(name, []):
      out.append((inst, times))
      if inst.opcode == "while":
        trips = _TRIP_COUNT.search(inst.line)
        n = int(trips.group(1)) if trips else 1
        for pattern in (_BODY, _CONDITION):
          target = pattern.search(inst.line)
          if target:
            visit(target.group(1), times * n, depth + 1)
      elif inst.opcode == "conditional":
        branches = _BRANCHES.search(inst.line)
        for target in (branches.group(1).split(",") if branches else []):
          visit(target.strip().lstrip("%"), times, depth + 1)
      elif inst.opcode == "call":
        target = _CALL_TARGET.search(inst.line)
        if target:
          visit(target.group(1), times, depth + 1)

  visit(entry, 1)
  return out


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_SHAPE = re.compile(r"\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]")


def _result_bytes(shape_text: str) -> int:
  """Bytes of an instruction's result (summed over a tuple's parts), unpadded."""
  total = 0
  for m in _SHAPE.finditer(shape_text):
    size = _DTYPE_BYTES.get(m["dtype"], 0)
    for d in (int(d) for d in m["dims"].split(",") if d):
      size *= d
    total += size
  return total


def _kind(inst: Instruction) -> str:
  """A readable kind for an instruction without a cycle estimate."""
  if inst.opcode == "custom-call":
    target = _CUSTOM_TARGET.search(inst.line)
    return f"custom-call:{target.group(1) if target else '?'}"
  if inst.opcode == "fusion":
    return inst.name.rstrip("0123456789.").replace("_", "-")  # e.g. gather-fusion
  return inst.opcode.replace("-start", "")


def cycle_report(hlo_text: str) -> dict:
  """Summed estimated cycles of one call of the program, their shares by stage, and
  the executed instructions the compiler left without an estimate (by kind, with
  the largest examples)."""
  by_stage = collections.Counter()
  uncosted = collections.defaultdict(lambda: {"count": 0, "examples": []})
  total = moves = 0
  for inst, times in executed(hlo_text):
    if inst.cycles is not None:
      total += inst.cycles * times
      by_stage[stage_of(inst.op_name)] += inst.cycles * times
    elif inst.opcode in _ASYNC_MOVES:
      moves += times
    elif inst.opcode not in _FREE and _result_bytes(inst.shape) >= _SCALAR_BYTES:
      entry = uncosted[_kind(inst)]
      entry["count"] += times
      if len(entry["examples"]) < 3:
        entry["examples"].append({"shape": inst.shape[:120],
                                  "op_name": inst.op_name[-120:]})
  return {"total_cycles": total,
          "cycles_by_stage": dict(by_stage.most_common()),
          "share_by_stage": {k: round(v / max(total, 1), 4)
                             for k, v in by_stage.most_common()},
          "uncosted": dict(sorted(uncosted.items(), key=lambda kv: -kv[1]["count"])),
          "async_memory_moves": moves}


def top_instructions(hlo_text: str, n: int = 10) -> list[dict]:
  """The `n` executed instructions with the most estimated cycles (per call)."""
  costed = [(inst.cycles * times, inst) for inst, times in executed(hlo_text)
            if inst.cycles is not None]
  costed.sort(key=lambda ci: -ci[0])
  return [{"cycles": c, "stage": stage_of(inst.op_name), "opcode": inst.opcode,
           "shape": inst.shape[:100], "op_name": inst.op_name[-110:]}
          for c, inst in costed[:n]]


def gathers(hlo_text: str, min_bytes: int = 1 << 20) -> list[dict]:
  """Executed gathers and scatters (or fusions of them) with results of at least
  `min_bytes`: data-dependent copies the TPU cost model rates poorly and gives no
  cycle estimate (a per-example time shift done as a gather was one)."""
  found = []
  for inst, _ in executed(hlo_text):
    kind = _kind(inst)
    data_dependent = (inst.opcode in ("gather", "scatter") or inst.opcode == "fusion"
                      and ("gather" in kind or "scatter" in kind))  # Not all-gathers.
    if data_dependent and _result_bytes(inst.shape) >= min_bytes:
      found.append({"instruction": inst.name, "shape": inst.shape[:100],
                    "mib": round(_result_bytes(inst.shape) / 2 ** 20, 1),
                    "stage": stage_of(inst.op_name), "op_name": inst.op_name[-100:]})
  return found


def concat_bitcasts(hlo_text: str) -> int:
  """Executed ConcatBitcast custom calls: libtpu's cost model counts -1 s for each."""
  return sum(times for inst, times in executed(hlo_text)
             if inst.opcode == "custom-call" and 'custom_call_target="ConcatBitcast"'
             in inst.line)


_LAYOUT_SHAPE = re.compile(
    r"\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]+)\]\{(?P<minor>[\d,]+)(?::T\((?P<tile>[\d,]+)\))?")


def lane_padded_arrays(hlo_text: str, min_bytes: int = 1 << 20,
                       min_padding: float = 4.0) -> list[dict]:
  """Executed instructions whose result's TPU layout pads the minor dimension to the
  128 lanes by at least `min_padding`x with at least `min_bytes` of data (e.g. an
  f32[.., 5000, 12] signal with its 12 leads on the lanes: 10.7x)."""
  sizes = _DTYPE_BYTES
  found = []
  for inst, _ in executed(hlo_text):
    for m in _LAYOUT_SHAPE.finditer(inst.shape):
      if m["dtype"] not in sizes or not m["tile"]:
        continue
      dims = [int(d) for d in m["dims"].split(",")]
      minor = dims[int(m["minor"].split(",")[0])]
      lanes = int(m["tile"].split(",")[-1])
      data = sizes[m["dtype"]]
      for d in dims:
        data *= d
      padding = -(-minor // lanes) * lanes / minor
      if data >= min_bytes and padding >= min_padding:
        found.append({"instruction": inst.name, "shape": m.group(0),
                      "padding": round(padding, 1), "mib": round(data / 2 ** 20, 1),
                      "op_name": inst.op_name[-100:]})
  return found
