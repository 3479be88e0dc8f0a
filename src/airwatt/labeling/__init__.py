"""Label Studio round trip for appliance on/off labels: project setup, active-learning push, pull and merge.

- ``interface``: the labeling config (aggregate and sub-meter channels, one label per appliance);
- ``client``: the Label Studio SDK 2.x wrapper with errors that name the URL and what to check;
- ``windows``: candidate windows and their selection (uncertainty, disagreement, a random share);
- ``tasks``: task payloads and model pre-annotations;
- ``push`` / ``pull``: the two commands; ``agreement``: IoU and Cohen's kappa on the 5 s grid;
- ``server``: a local Label Studio for development, tests and benchmarks.
"""
