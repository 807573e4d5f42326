"""`attnbench advise`: which CP strategy, predicted from measurements and checked against runs.

- attnbench.advise.network: latency + bandwidth per collective and link (fitted from
  `attnbench netbench`, or shipped profiles with named sources);
- attnbench.advise.compute: the time of one local attention call (from a kernel run, or
  published figures);
- attnbench.advise.timeline: one pass of a method's schedule played out on every rank;
- attnbench.advise.predict: one case (plan, exact step areas, compute, passes, memory);
- attnbench.advise.rank: every method and parameter set for one question, ranked, reasons;
- attnbench.advise.check: predicted vs measured for every case of a CP run.

The core of attnbench (masks, kernels, cp, measure) never imports this package; it imports
them (and attnbench.results for runs), never the CLI, runner or report.
"""
