"""Adaptive number of EDLM candidates per step, driven by the effective sample size the sampler already measures.

A fixed (k, window) spends the same energy on every step in the window, whether or not the weights use it. The
effective sample size ESS = 1 / sum_j w_j^2 of a step's k normalised weights w = softmax(-E/tau) tells which:

    ESS = k   the weights are uniform: the energy does not discriminate between the candidates, the target
              p(x0|x_t) is close to the proposal mu(x0|x_t) here, and picking one of k candidates uniformly is a
              draw from mu: the step is a plain MDLM step that paid for k - 1 extra candidates and an energy;
    ESS = 1   one candidate takes all the weight: the proposal is far from the target, and the chosen candidate
              is the best of too few; more candidates would find better ones (importance resampling approaches
              the target only as k grows, and the k it needs grows with the mismatch).

The policy reads, for each sequence that drew candidates on the step, its usage of its extra candidates,
u = (ESS - 1) / (k - 1) in [0, 1] (0: one candidate took all the weight, 1: uniform weights), and sets THAT
sequence's k for its next EDLM step:

    u <= double_below   k -> min(2k, k_max)    (weights degenerate: more candidates pay)
    u >= halve_above    k -> max(k // 2, k_min) (weights flat: the energy is not earning its cost)
    otherwise           k unchanged.

On a masked-diffusion trajectory the early steps (most of x_t masked) have degenerate weights and the late ones
(a few isolated masks between known tokens, where the factorised mu is nearly exact) have flat ones, so the
policy spends k_max where the energy discriminates and tapers to plain MDLM steps where it does not.

Exactness. The decision made after step i sets k for step i+1 only: step i's proposal, weights and choice are
those of a fixed k, and step i+1's k is a function of the past, known before its candidates are drawn. Every
step is then a valid sampling-importance-resampling step (k draws from mu, weights softmax(-E/tau) over those k,
one chosen) for whatever k it uses, so changing k between steps changes how close each step gets to the target,
never what it targets. Using the CURRENT step's weights to change the current step's k (e.g. drawing more
candidates until the weights look good) would make the number of candidates depend on their energies and bias
the choice: it is not done.

k = 1 is absorbing: a step with one candidate runs no energy and measures no ESS, so nothing can raise k again.
So the default `k_min` is 2, which keeps the energy on; `k_min = 1` lets one flat step end a sequence's energy.

Each sequence decides alone: its k depends only on its own past ESS, never on the other sequences of its batch,
so a sample's law does not depend on the batch size or on its neighbours. (An earlier rule used the batch's mean
ESS; on a toy where half the batch had flat weights it moved the other half's output by 10 standard errors.) A
step draws max(k) candidates for the sequences that take part and gives sequence b an energy and a weight only on
its first k_b (the rest weigh 0): an exact k_b-candidate step for each.

Measured (docs/studies/adaptive_k.md; exact denoiser and true energy, length 32): the policy does NOT beat
fixed k on every step at equal energy cost. The ESS rises steadily along the trajectory (k = 8: about 1.2 on the
first half of the steps, 7.8 on the last), yet the energy's gain does not follow a low ESS (on `synthetic` the
early and the late half of the steps each give about half the every-step gain; on markov3 the late half, with
the higher ESS, gives more), and flat weights appear only on the last one or two steps, so the policy saves 0-8%
of the candidates and sits on the fixed-k curve (within 0.003 nats, intervals +-0.015 with 2048 samples).
"""

from edlm.config.sampling import K_POLICIES, KPolicy, parse_k_policy  # noqa: F401 (the policy's settings)
