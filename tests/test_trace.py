"""The denoising trace (sampling/trace.py): what it records, the page it writes (self-contained), and the page
in a real headless browser (marker `browser`: skipped when no Chromium is installed; `.ci/run` installs
Debian's `chromium`)."""

import html
import json
import re
import shutil
import subprocess

import pytest
import torch

from edlm.cli import main
from edlm.config.sampling import SamplerConfig
from edlm.data.synthetic import SyntheticConfig, SyntheticLanguage
from edlm.diffusion.schedules import LogLinear
from edlm.sampling.infill import Infill
from edlm.sampling.loop import sample
from edlm.sampling.trace import TraceRecorder
from oracles import markov_denoiser


def test_recorder_replays_the_sampler_and_knows_the_winning_candidate():
    lang = SyntheticLanguage(SyntheticConfig(vocab_size=3, successors=(1, 2), seed=1, target_entropy=0.6))
    mask, chosen = 3, []

    class TrueAR:
        def energy(self, x0, x_t, t, *, log_mu=None):
            return (-lang.log_prob(x0) + log_mu.double()).float()

    x_init = Infill((0, None, None, 1, None, None, None)).x_init(5, mask)
    rec = TraceRecorder(label="EDLM", keep=3)
    rec.begin(x_init, mask)
    states = []

    def cb(i, x, t, ess):
        states.append(x.clone())
        rec(i, x, t, ess)

    def oc(i, a, j, w):
        chosen.append((i, a.clone(), j.clone(), w.clone()))
        rec.on_choice(i, a, j, w)

    x, st = sample(markov_denoiser(lang, mask), LogLinear(), mask, SamplerConfig(steps=4, k=4), x_init=x_init,
                   energy=TrueAR(), generator=torch.Generator().manual_seed(0), callback=cb, on_choice=oc)
    d = rec.to_dict(type("Tok", (), {"decode": staticmethod(lambda ids: "abc_"[ids[0]])})())
    assert d["tokens"] == x[:3].tolist() and len(d["steps"]) == len(states)
    at = torch.tensor(d["unmasked_at"])
    assert ((at == -1) == (x_init[:3] != mask)).all()  # fixed from the start
    for f, xs in enumerate(states):  # replaying "unmasked at step <= f" gives the sampler's state after step f
        shown = torch.where((at >= 0) & (at > f), mask, torch.tensor(d["tokens"]))
        assert torch.equal(shown, xs[:3])
    for i, a, j, w in chosen:  # the winner and its weight per traced sequence; ESS = 1 / sum w^2
        step = next(s for s in d["steps"] if s["i"] == i)
        for b, jj, ww in zip(a.tolist(), j.tolist(), w.tolist(), strict=True):
            if b < 3:
                assert step["chosen"][b] == jj and abs(step["weight"][b] - ww[jj]) < 1e-3
                assert abs(step["ess"][b] - 1 / sum(v * v for v in ww)) < 1e-2 and 1 <= step["ess"][b] <= 4
    assert chosen and st.energy_steps == len({c[0] for c in chosen})


def _trace(micro_runs, tmp_path, capsys, *extra):
    page = tmp_path / "trace.html"
    assert main(["sample", "--ckpt", str(micro_runs / "mdlm"), "--num", "3", "--steps", "5", "--seed", "3",
                 "--out", str(tmp_path / "s.jsonl"), "--trace", str(page), "--quiet", *extra]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(r) for r in (tmp_path / "s.jsonl").read_text().splitlines()]
    return page, summary, rows


def _data(page):
    text = page.read_text()
    blob = re.search(r'<script id="trace-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    return text, json.loads(blob)


def test_cli_trace_page_is_self_contained_and_holds_both_methods(micro_runs, tmp_path, capsys):
    page, summary, rows = _trace(micro_runs, tmp_path, capsys, "--energy", f"ar:{micro_runs / 'ar'}", "--k", "3",
                                 "--trace-mdlm", "--infill", "ab[MASK*6]cd[MASK*4]")
    assert summary["trace"] == str(page)
    text, data = _data(page)
    assert not re.search(r"(src|href)\s*=|https?://|@import|url\(", text)  # nothing to fetch
    assert [r["label"] for r in data["runs"]] == ["EDLM-AR", "MDLM"]
    edlm_run = data["runs"][0]
    assert edlm_run["tokens"] == [r["ids"] for r in rows]  # the page ends on the samples written
    assert all(u[:2] == [-1, -1] and u[8:10] == [-1, -1] for u in edlm_run["unmasked_at"])  # the fixed tokens
    assert any(c is not None for s in edlm_run["steps"] for c in s["chosen"])
    assert all(c is None for s in data["runs"][1]["steps"] for c in s["chosen"])  # MDLM: no candidates
    assert main(["sample", "--ckpt", str(micro_runs / "mdlm"), "--trace-mdlm", "--trace", str(tmp_path / "t.html"),
                 "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "give --trace and --energy" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(micro_runs / "ar"), "--trace", str(tmp_path / "t.html"),
                 "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--trace applies to an MDLM run" in capsys.readouterr().err


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browser(tmp_path, *args):
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _shown(dom, ri, si):
    m = re.search(rf'<div class="seq" id="seq-{ri}-{si}">(.*?)</div>', dom, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1)))


@pytest.mark.browser
def test_trace_page_plays_to_the_final_text_in_a_real_browser(micro_runs, tmp_path, capsys):
    if _chromium() is None:
        pytest.skip("no Chromium installed (apt-get install chromium); .ci/run installs it")
    page, _, rows = _trace(micro_runs, tmp_path, capsys, "--energy", f"ar:{micro_runs / 'ar'}", "--k", "3",
                           "--trace-mdlm", "--infill", "ab[MASK*6]cd[MASK*4]")
    _, data = _data(page)
    url = page.resolve().as_uri()
    # At load (frame 0): the template, every blank masked.
    start = _browser(tmp_path, "--dump-dom", url + "#frame=0").stdout
    assert 'data-done="0"' in start
    assert _shown(start, 0, 0) == "ab______cd____"
    # Played by itself (virtual time runs the timers): it reaches the last frame and shows the final samples.
    end = _browser(tmp_path, "--virtual-time-budget=60000", "--dump-dom", url).stdout
    assert 'data-done="1"' in end and ">done<" in end
    for si, r in enumerate(rows):
        assert _shown(end, 0, si) == r["text"]
    mdlm_final = ["".join(data["runs"][1]["pieces"][str(i)] for i in row) for row in data["runs"][1]["tokens"]]
    assert [_shown(end, 1, si) for si in range(len(mdlm_final))] == mdlm_final
    # A frame after an EDLM step where sample 0 drew candidates: its ESS and winner are on the page.
    f, step = next((f, s) for f, s in enumerate(data["runs"][0]["steps"], 1) if s["chosen"][0] is not None)
    mid = _browser(tmp_path, "--dump-dom", url + f"#frame={f}").stdout
    assert f"winner: candidate {step['chosen'][0]} (w {step['weight'][0]:.2f})" in mid
    assert f"ESS {step['ess'][0]:.2f}/3" in mid and f"step {f}/" in mid
    # A screenshot of the last frame: a real image, not a blank page.
    png = tmp_path / "trace.png"
    _browser(tmp_path, "--window-size=900,420", f"--screenshot={png}", url + "#end")
    from matplotlib.image import imread

    img = imread(png)
    assert img.shape[:2] == (420, 900) and float(img[..., :3].std()) > 0.05
