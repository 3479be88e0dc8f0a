"""Real-time serving: request schemas (``schemas``), input checks and the gap policy (``inputs``), the
in-process engine (``engine``), model loading and settings (``loading``), `airwatt serve` (``cli``).

The BentoML service in serving/service.py is a thin shell over these modules (docs/serving.md). Nothing is
imported here, so `airwatt --help` does not pay for torch.
"""
