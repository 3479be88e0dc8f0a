"""Training with PyTorch Lightning: one LightningModule wraps any registered model (airwatt.models).

The only part of the package that imports Lightning; entry point ``airwatt.training.train.train``
(``airwatt train``).
"""
