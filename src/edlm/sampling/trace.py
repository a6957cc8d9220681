"""A picture of the denoising: record each sampler step, write one self-contained HTML page that animates it.

    rec = TraceRecorder(label="EDLM-AR", keep=4)     # records the first `keep` sequences of the first batch
    generate(req, device, model, meta, trace=rec)     # sampling/generate.py calls begin / __call__ / on_choice
    write_trace_html("trace.html", [rec], tokenizer)  # no network needed to view it

Tokens never change once unmasked (method.md 1), so a sequence's whole history is its final tokens plus the
step at which each position unmasked (-1: fixed from the start, an infill or a prefix). Per step the page
also shows the step's time t and, for EDLM, each sequence's ESS and which of the k candidates won with its
weight. The page plays by itself; `#end` shows the last frame at once, `#frame=N` frame N, `#speed=MS`
sets the milliseconds per frame. When the animation reaches the last frame the body gets data-done="1".
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from edlm.safe_io import atomic_write_bytes


class TraceRecorder:
    """Sampler hooks (begin, the step callback, on_choice, on_block) that keep what the page needs."""

    def __init__(self, label: str = "MDLM", keep: int = 4, mask_id: int | None = None, info: dict | None = None):
        self.label, self.keep, self.mask_id, self.info = label, keep, mask_id, dict(info or {})
        self.x = None  # (n, L) the current tokens of the traced sequences
        self.unmasked_at = None  # (n, L) step index at which each position unmasked, -1 = fixed
        self.steps: list[dict] = []  # one per sampler step: i, t, block, ess (n), chosen (n), weight (n)
        self.block = 0
        self.blocks: list[tuple[int, int]] = []

    @property
    def active(self) -> bool:
        return self.x is not None

    def begin(self, x_init: torch.Tensor, mask_id: int) -> None:
        """Called once with the start state of the first batch (B, L); later batches are not traced."""
        if self.x is not None:
            return
        self.mask_id = mask_id
        self.x = x_init[: self.keep].detach().cpu().clone()
        self.unmasked_at = torch.full(self.x.shape, -1, dtype=torch.long)
        self.unmasked_at[self.x == mask_id] = 10**9  # still masked

    def on_block(self, b: int, lo: int, hi: int) -> None:
        self.block = b
        self.blocks.append((lo, hi))

    def _step(self, i: int) -> dict:
        if not self.steps or self.steps[-1]["i"] != i:
            n = self.x.shape[0]
            self.steps.append({"i": i, "t": None, "block": self.block, "ess": [None] * n, "chosen": [None] * n,
                               "weight": [None] * n})
        return self.steps[-1]

    def on_choice(self, i: int, active: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> None:
        if self.x is None:
            return
        st = self._step(i)
        n = self.x.shape[0]
        for a, j, w in zip(active.tolist(), chosen.tolist(), weights.double().cpu().tolist(), strict=True):
            if a < n:  # the step's ESS is over the active sequences only: index it by `active` here
                st["chosen"][a] = int(j)
                st["weight"][a] = round(float(w[j]), 4)
                st["ess"][a] = round(1.0 / sum(v * v for v in w), 3)
                st["k"] = len(w)

    def __call__(self, i: int, x: torch.Tensor, t: float, ess=None) -> None:
        if self.x is None:
            return
        st = self._step(i)
        st["t"] = float(t)
        x = x[: self.keep].detach().cpu()
        new = (self.x == self.mask_id) & (x != self.mask_id)
        self.unmasked_at[new] = len(self.steps) - 1
        self.x = x.clone()

    def to_dict(self, tokenizer) -> dict:
        """What the page animates (ids as display strings looked up in a table of the ids that occur)."""
        ids = self.x.tolist()
        return {"label": self.label, "info": self.info, "tokens": ids,
                "unmasked_at": [[-1 if s == 10**9 else s for s in row] for row in self.unmasked_at.tolist()],
                "steps": self.steps, "blocks": self.blocks,
                "pieces": {str(i): piece(tokenizer, i) for i in sorted({i for row in ids for i in row})}}


def piece(tokenizer, i: int) -> str:
    return tokenizer.decode([i])


def write_trace_html(path, recorders: list[TraceRecorder], tokenizer, title: str = "edlm denoising trace") -> Path:
    """One HTML file holding the data and the player (inline CSS and JS; nothing fetched)."""
    runs = [r.to_dict(tokenizer) for r in recorders if r.active]
    data = {"title": title, "mask": getattr(tokenizer, "mask_token", "_"), "runs": runs}
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # never closes the script tag
    page = (_PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", blob))
    path = Path(path)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:18px;margin:0 0 8px}
#bar{display:flex;gap:12px;align-items:center;margin-bottom:10px;font-size:14px}
#runs{display:flex;gap:16px;align-items:flex-start}
.run{flex:1;min-width:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px}
.run h2{font-size:15px;margin:0 0 4px}
.meta{font-size:13px;color:#555;margin-bottom:8px;font-family:ui-monospace,monospace}
.sample{margin-bottom:10px}
.stat{font-size:12px;color:#666;font-family:ui-monospace,monospace}
.seq{font-family:ui-monospace,monospace;font-size:15px;white-space:pre-wrap;word-break:break-all;line-height:1.6}
.seq span{padding:0 1px;border-radius:2px}
.m{color:#bbb;background:#f0f0f0}
.f{color:#0b5394;font-weight:bold}
.n{background:#ffe08a}
.d{color:#222}
</style></head><body>
<h1>__TITLE__</h1>
<div id="bar"><button id="play">pause</button>
<input id="frame" type="range" min="0" value="0" style="flex:1">
<span id="pos"></span><span id="status">playing</span></div>
<div style="font-size:12px;color:#666;margin-bottom:8px">
<span class="f">fixed</span> given tokens &middot; <span class="n">new</span> unmasked this step &middot;
<span class="m">_</span> still masked</div>
<div id="runs"></div>
<script id="trace-data" type="application/json">__DATA__</script>
<script>
(function(){
const D = JSON.parse(document.getElementById('trace-data').textContent);
const runs = D.runs;
const nFrames = Math.max(1, ...runs.map(r => r.steps.length + 1));
const H = new URLSearchParams(location.hash.slice(1));
let frame = H.has('end') ? nFrames - 1 : Math.min(nFrames - 1, parseInt(H.get('frame') || '0', 10) || 0);
const speed = parseInt(H.get('speed') || '350', 10);
let playing = !H.has('end') && !H.has('frame');
const root = document.getElementById('runs');
const slider = document.getElementById('frame');
slider.max = nFrames - 1;
const views = runs.map((r, ri) => {
  const div = document.createElement('div'); div.className = 'run';
  const h = document.createElement('h2'); h.textContent = r.label; div.appendChild(h);
  const meta = document.createElement('div'); meta.className = 'meta'; div.appendChild(meta);
  const samples = r.tokens.map((row, si) => {
    const s = document.createElement('div'); s.className = 'sample';
    const stat = document.createElement('div'); stat.className = 'stat'; s.appendChild(stat);
    const seq = document.createElement('div'); seq.className = 'seq'; seq.id = 'seq-' + ri + '-' + si;
    const spans = row.map(id => { const sp = document.createElement('span'); seq.appendChild(sp); return sp; });
    s.appendChild(seq); div.appendChild(s);
    return {stat, seq, spans};
  });
  root.appendChild(div);
  return {meta, samples};
});
function fmt(v, d){ return v === null || v === undefined ? '-' : Number(v).toFixed(d); }
function draw(){
  runs.forEach((r, ri) => {
    const f = Math.min(frame, r.steps.length);  // frame f = after step f-1; 0 = the start state
    const st = f > 0 ? r.steps[f - 1] : null;
    const nx = f < r.steps.length && r.steps[f].block === (st ? st.block : 0) ? r.steps[f].t : 0;
    const v = views[ri];
    const info = Object.entries(r.info).map(([k, x]) => k + '=' + x).join(' ');
    v.meta.textContent = 'step ' + f + '/' + r.steps.length
      + (st ? '  t ' + fmt(st.t, 3) + ' -> ' + fmt(nx, 3) : '  start')
      + (r.blocks.length > 1 && st ? '  block ' + (st.block + 1) + '/' + r.blocks.length : '') + '  ' + info;
    r.tokens.forEach((row, si) => {
      const at = r.unmasked_at[si], s = v.samples[si];
      let masked = 0;
      row.forEach((id, p) => {
        const sp = s.spans[p];
        if (at[p] < 0) { sp.className = 'f'; sp.textContent = r.pieces[id]; }
        else if (at[p] < f - 1) { sp.className = 'd'; sp.textContent = r.pieces[id]; }
        else if (at[p] === f - 1) { sp.className = 'n'; sp.textContent = r.pieces[id]; }
        else { sp.className = 'm'; sp.textContent = D.mask; masked++; }
      });
      let text = '#' + si + '  masked ' + masked + '/' + row.length;
      if (st && st.ess[si] !== null) text += '  ESS ' + fmt(st.ess[si], 2) + '/' + (st.k || '?');
      if (st && st.chosen[si] !== null)
        text += '  winner: candidate ' + st.chosen[si] + ' (w ' + fmt(st.weight[si], 2) + ')';
      s.stat.textContent = text;
    });
  });
  slider.value = frame;
  document.getElementById('pos').textContent = 'frame ' + frame + '/' + (nFrames - 1);
  const done = frame === nFrames - 1;
  document.body.dataset.done = done ? '1' : '0';
  document.getElementById('status').textContent = done ? 'done' : (playing ? 'playing' : 'paused');
  document.getElementById('play').textContent = playing ? 'pause' : (done ? 'replay' : 'play');
}
function tick(){
  if (!playing) return;
  if (frame < nFrames - 1) { frame++; draw(); }
  if (frame >= nFrames - 1) { playing = false; draw(); return; }
  setTimeout(tick, speed);
}
document.getElementById('play').onclick = () => {
  if (playing) { playing = false; }
  else { if (frame >= nFrames - 1) frame = 0; playing = true; setTimeout(tick, speed); }
  draw();
};
slider.oninput = () => { frame = parseInt(slider.value, 10); playing = false; draw(); };
draw();
if (playing) setTimeout(tick, speed);
})();
</script></body></html>
"""
